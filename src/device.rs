//! Choosing a Burn device by name (`auto`, `flex`, `ndarray`, `wgpu`), as the examples'
//! `--device` flag does. The model code itself never names a backend.

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
    /// The GPU through wgpu: Vulkan, Metal or DX12 (feature `wgpu`).
    Wgpu,
}

impl FromStr for DeviceChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(DeviceChoice::Auto),
            "flex" | "cpu" => Ok(DeviceChoice::Flex),
            "ndarray" => Ok(DeviceChoice::NdArray),
            "wgpu" | "gpu" | "vulkan" => Ok(DeviceChoice::Wgpu),
            other => Err(Error::Device(format!(
                "unknown device '{other}': expected auto, flex, ndarray or wgpu"
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
            DeviceChoice::Auto => Err(Error::Device(
                "no backend is compiled in: enable one of the features flex, ndarray, wgpu".into(),
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

/// Whether wgpu sees a hardware GPU: always false without the `wgpu` feature.
#[cfg(not(feature = "wgpu"))]
pub fn has_hardware_gpu() -> bool {
    false
}
