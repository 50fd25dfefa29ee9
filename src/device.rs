//! Choosing a Burn device by name (`auto`, `flex`, `ndarray`, `wgpu[:N]`, `cuda[:N]`), as the
//! examples' `--device` and `--devices` flags do, and its float precision (`--dtype`). The model
//! code itself never names a backend.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

use crate::error::{Error, Result};

/// A device family that can be selected at run time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DeviceChoice {
    /// `wgpu` when it is compiled in (feature `wgpu`) and the machine has a hardware GPU
    /// adapter; `flex` otherwise (a software Vulkan driver such as Mesa's lavapipe is not
    /// chosen automatically).
    #[default]
    Auto,
    /// Burn's pure-Rust CPU backend (feature `flex`, the default).
    Flex,
    /// The deprecated ndarray CPU backend (feature `ndarray`), kept for comparison.
    NdArray,
    /// The GPU through wgpu: Vulkan, Metal or DX12 (feature `wgpu`); the adapter wgpu
    /// prefers (a high-power GPU first).
    Wgpu,
    /// The `N`-th discrete GPU through wgpu (`wgpu:N`, feature `wgpu`).
    WgpuDiscrete(usize),
    /// The NVIDIA GPU of CUDA index `N` (`cuda` is `cuda:0`; feature `cuda`).
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        let (name, index) = match lower.split_once(':') {
            Some((name, index)) => {
                let index = index.parse::<usize>().map_err(|_| {
                    Error::Device(format!(
                        "device '{s}': the index after ':' must be a number such as cuda:0"
                    ))
                })?;
                (name, Some(index))
            }
            None => (lower.as_str(), None),
        };
        match (name, index) {
            ("auto", None) => Ok(DeviceChoice::Auto),
            ("flex" | "cpu", None) => Ok(DeviceChoice::Flex),
            ("ndarray", None) => Ok(DeviceChoice::NdArray),
            ("wgpu" | "gpu" | "vulkan", None) => Ok(DeviceChoice::Wgpu),
            ("wgpu" | "gpu" | "vulkan", Some(i)) => Ok(DeviceChoice::WgpuDiscrete(i)),
            ("cuda", i) => Ok(DeviceChoice::Cuda(i.unwrap_or(0))),
            ("auto" | "flex" | "cpu" | "ndarray", Some(_)) => Err(Error::Device(format!(
                "device '{s}' takes no index: only wgpu:N and cuda:N do"
            ))),
            _ => Err(Error::Device(format!(
                "unknown device '{s}': expected auto, flex, ndarray, wgpu, wgpu:N, cuda or cuda:N"
            ))),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceChoice::Auto => "auto",
            DeviceChoice::Flex => "flex",
            DeviceChoice::NdArray => "ndarray",
            DeviceChoice::Wgpu => "wgpu",
            DeviceChoice::WgpuDiscrete(i) => return write!(f, "wgpu:{i}"),
            DeviceChoice::Cuda(i) => return write!(f, "cuda:{i}"),
        })
    }
}

impl DeviceChoice {
    /// The concrete choice `Auto` stands for in this build on this machine.
    pub fn resolve(self) -> DeviceChoice {
        match self {
            DeviceChoice::Auto if has_hardware_gpu() => DeviceChoice::Wgpu,
            DeviceChoice::Auto if cfg!(feature = "flex") => DeviceChoice::Flex,
            DeviceChoice::Auto if cfg!(feature = "ndarray") => DeviceChoice::NdArray,
            other => other,
        }
    }

    /// Whether this is a GPU (wgpu or CUDA).
    pub fn is_gpu(self) -> bool {
        matches!(
            self.resolve(),
            DeviceChoice::Wgpu | DeviceChoice::WgpuDiscrete(_) | DeviceChoice::Cuda(_)
        )
    }

    /// The inference device (no autodiff) for this choice, or an error naming the Cargo
    /// feature to enable.
    pub fn device(self) -> Result<Device> {
        let missing = |feature: &str| {
            Error::Device(format!(
                "device '{feature}' is not compiled in: rebuild with `--features {feature}`"
            ))
        };
        match self.resolve() {
            DeviceChoice::Flex => {
                #[cfg(feature = "flex")]
                return Ok(Device::flex());
                #[cfg(not(feature = "flex"))]
                return Err(missing("flex"));
            }
            DeviceChoice::NdArray => {
                #[cfg(feature = "ndarray")]
                #[allow(deprecated)]
                return Ok(Device::ndarray());
                #[cfg(not(feature = "ndarray"))]
                return Err(missing("ndarray"));
            }
            DeviceChoice::Wgpu => {
                #[cfg(feature = "wgpu")]
                return Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice));
                #[cfg(not(feature = "wgpu"))]
                return Err(missing("wgpu"));
            }
            DeviceChoice::WgpuDiscrete(_index) => {
                #[cfg(feature = "wgpu")]
                return wgpu_discrete(_index);
                #[cfg(not(feature = "wgpu"))]
                return Err(missing("wgpu"));
            }
            DeviceChoice::Cuda(_index) => {
                #[cfg(feature = "cuda")]
                return Ok(Device::cuda(_index));
                #[cfg(not(feature = "cuda"))]
                return Err(missing("cuda"));
            }
            DeviceChoice::Auto => Err(Error::Device(
                "no backend is compiled in: enable one of the features flex, ndarray, wgpu, cuda"
                    .into(),
            )),
        }
    }
}

/// Whether wgpu sees a hardware GPU (discrete, integrated or virtual; not a CPU/software
/// adapter). Probed once per process.
#[cfg(feature = "wgpu")]
pub fn has_hardware_gpu() -> bool {
    static FOUND: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FOUND.get_or_init(|| {
        // The primary backends only (Vulkan, Metal, DX12): every hardware GPU shows up there,
        // and probing OpenGL through EGL makes libwayland print "error: XDG_RUNTIME_DIR is
        // invalid or not set" on headless machines.
        let mut descriptor = wgpu::InstanceDescriptor::new_without_display_handle();
        descriptor.backends = wgpu::Backends::PRIMARY;
        let instance = wgpu::Instance::new(descriptor);
        futures_lite::future::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY))
            .iter()
            .any(|a| a.get_info().device_type != wgpu::DeviceType::Cpu)
    })
}

/// The `index`-th discrete GPU through wgpu, or an error when wgpu sees fewer (cubecl-wgpu
/// panics, on its own thread, on a missing adapter).
#[cfg(feature = "wgpu")]
fn wgpu_discrete(index: usize) -> Result<Device> {
    let found = discrete_gpus();
    if index >= found {
        return Err(Error::Device(format!(
            "wgpu:{index} does not exist: wgpu sees {found} discrete GPU(s) on this machine (wgpu:0 is the first); use --device wgpu for the adapter wgpu prefers"
        )));
    }
    Ok(Device::wgpu(burn::tensor::DeviceKind::DiscreteGpu(index)))
}

/// The discrete GPUs wgpu sees on its primary backends (what `DeviceKind::DiscreteGpu(i)`
/// indexes). Probed once per process.
#[cfg(feature = "wgpu")]
fn discrete_gpus() -> usize {
    static FOUND: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *FOUND.get_or_init(|| {
        let mut descriptor = wgpu::InstanceDescriptor::new_without_display_handle();
        descriptor.backends = wgpu::Backends::PRIMARY;
        let instance = wgpu::Instance::new(descriptor);
        futures_lite::future::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY))
            .iter()
            .filter(|a| a.get_info().device_type == wgpu::DeviceType::DiscreteGpu)
            .count()
    })
}

/// Whether wgpu sees a hardware GPU: always false without the `wgpu` feature.
#[cfg(not(feature = "wgpu"))]
pub fn has_hardware_gpu() -> bool {
    false
}

/// The float precision of a run's parameters and activations (`--dtype`): Burn's default float
/// dtype of the device ([`Device::configure`]), set before the model and data are created.
///
/// This is pure half-precision training, not PyTorch's automatic mixed precision: Burn 0.22
/// has no autocast and keeps no f32 master copy of the weights, so the optimizer updates the
/// bf16/f16 parameters themselves (small updates can round away; bf16 keeps f32's range, f16
/// does not and has no loss scaling here).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// 32-bit floats (the default).
    #[default]
    F32,
    /// bfloat16: f32's exponent range, 8 bits of mantissa.
    Bf16,
    /// IEEE half precision: 11 bits of mantissa, largest value 65504.
    F16,
}

impl FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" | "fp32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "f16" | "float16" | "fp16" | "half" => Ok(Precision::F16),
            _ => Err(Error::Device(format!(
                "unknown dtype '{s}': expected f32, bf16 or f16"
            ))),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        })
    }
}

impl Precision {
    /// Burn's dtype.
    pub fn float_dtype(self) -> burn::tensor::FloatDType {
        match self {
            Precision::F32 => burn::tensor::FloatDType::F32,
            Precision::Bf16 => burn::tensor::FloatDType::BF16,
            Precision::F16 => burn::tensor::FloatDType::F16,
        }
    }

    /// Makes this precision `device`'s default float dtype. Call it before any tensor is
    /// created on the device (Burn fixes a device's settings at its first tensor).
    ///
    /// `F32` on a device already set to f32 does nothing. Errors: the device's backend does not
    /// have the dtype, or the device already holds tensors with another default.
    pub fn configure(self, device: &Device) -> Result<()> {
        let dtype = self.float_dtype();
        if device.settings().float_dtype == dtype {
            return Ok(());
        }
        if !device.supports_dtype(dtype) {
            return Err(Error::Device(format!(
                "{device:?} has no {self} tensors: use --dtype f32 on it, or a device whose backend has {self}"
            )));
        }
        let mut device = device.clone();
        device.configure(dtype).map_err(|e| {
            Error::Device(format!(
                "cannot make {self} the float type of {device:?}: {e} (a device's float type is fixed by its first tensor, for the whole process: set it before anything is created on the device, or run a new process)"
            ))
        })
    }
}
