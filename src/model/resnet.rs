//! The ResNet network of He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016),
//! with torchvision's exact topology and parameter names (`conv1`, `bn1`, `layer1..layer4`,
//! `downsample`, `fc`), implementing the crate's model contract [`VisionModel`] (timm's:
//! `forward_features` unpooled, `forward_head`, `num_features`, `reset_classifier`).

use crate::kernels::{batch_norm_relu, conv2d, max_pool2d, pool_output_size};
use burn::module::Module;
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};

use super::block::{BatchNormInput, Block, conv, new_batch_norm, push_conv_bn};
use super::config::{ResNetConfig, Stem};
use super::contract::{VisionModel, check_num_classes};
use super::freeze::{self, FreezeState};
use super::fused::FusedResNet;
use super::stage::{StageSpec, Stages};
use crate::data::Normalize;
use crate::error::Result;

/// A ResNet of any depth. Build it with [`ResNetConfig`]; it runs on any Burn device.
///
/// ```
/// use burn::tensor::{Device, Tensor, Distribution};
/// use finetune::model::{ResNetConfig, VisionModel};
///
/// let device = Device::flex(); // or Device::default(), a wgpu device, ...
/// let model = ResNetConfig::resnet18(10).with_widths([8, 16, 32, 64]).init(&device);
/// let images = Tensor::<4>::random([2, 3, 32, 32], Distribution::Default, &device);
/// assert_eq!(model.forward(images.clone()).dims(), [2, 10]);
/// assert_eq!(model.forward_features(images.clone()).dims(), [2, 64, 1, 1]);
/// assert_eq!(model.forward_pre_logits(images).dims(), [2, 64]);
/// ```
#[derive(Module, Debug)]
pub struct ResNet {
    /// Stem convolution (7x7/2 for [`Stem::ImageNet`], 3x3/1 for [`Stem::Cifar`]).
    pub conv1: burn::nn::conv::Conv2d,
    /// Stem BatchNorm.
    pub bn1: burn::nn::BatchNorm,
    /// Stem max-pool (3x3/2), absent for [`Stem::Cifar`].
    pub maxpool: Option<MaxPool2d>,
    /// Stage 1 (stride 1).
    pub layer1: Vec<Block>,
    /// Stage 2 (stride 2).
    pub layer2: Vec<Block>,
    /// Stage 3 (stride 2).
    pub layer3: Vec<Block>,
    /// Stage 4 (stride 2).
    pub layer4: Vec<Block>,
    /// Global average pool.
    pub avgpool: AdaptiveAvgPool2d,
    /// Classifier head.
    pub fc: Linear,
    /// The configuration this model was built from (kept in sync by `reset_classifier`).
    #[module(skip)]
    pub(crate) config: ResNetConfig,
    /// The freeze specification last applied through Burn's `freeze_group`.
    #[module(skip)]
    pub(crate) freeze: FreezeState,
}

impl ResNet {
    pub(crate) fn from_config(config: &ResNetConfig, device: &Device) -> Self {
        let w0 = config.widths[0];
        let (conv1, maxpool) = match config.stem {
            Stem::ImageNet => (
                conv(config.in_channels, w0, 7, 2, 3, device),
                Some(
                    MaxPool2dConfig::new([3, 3])
                        .with_strides([2, 2])
                        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                        .init(),
                ),
            ),
            Stem::Cifar => (conv(config.in_channels, w0, 3, 1, 1, device), None),
        };
        let mut in_ch = w0;
        let mut stages: Vec<Vec<Block>> = Vec::with_capacity(4);
        for (i, (&blocks, &width)) in config.layers.iter().zip(&config.widths).enumerate() {
            let stride = if i == 0 { 1 } else { 2 };
            let mut stage = Vec::with_capacity(blocks);
            for b in 0..blocks {
                let s = if b == 0 { stride } else { 1 };
                stage.push(Block::new(
                    config.block,
                    in_ch,
                    width,
                    s,
                    config.zero_init_residual,
                    device,
                ));
                in_ch = width * config.block.expansion();
            }
            stages.push(stage);
        }
        let layer4 = stages.pop().unwrap_or_default();
        let layer3 = stages.pop().unwrap_or_default();
        let layer2 = stages.pop().unwrap_or_default();
        let layer1 = stages.pop().unwrap_or_default();
        ResNet {
            conv1,
            bn1: new_batch_norm(w0, false, device),
            maxpool,
            layer1,
            layer2,
            layer3,
            layer4,
            avgpool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            fc: LinearConfig::new(config.num_features(), config.num_classes).init(device),
            config: config.clone(),
            freeze: FreezeState::default(),
        }
    }

    /// The input of every BatchNorm layer, in forward order, for images of shape `images`
    /// `[B, C, H, W]` (computed from the shapes alone: nothing runs), with whether each
    /// normalises with batch statistics in this model's forward pass (its training flag is on
    /// and the model is on an autodiff device).
    pub fn batch_norm_inputs(&self, images: [usize; 4]) -> Vec<BatchNormInput> {
        let mut out = Vec::new();
        let mut x = push_conv_bn(&mut out, "bn1".into(), (&self.conv1, &self.bn1), images);
        if let Some(pool) = &self.maxpool {
            let [h, w] = pool_output_size(pool, [x[2], x[3]]);
            x = [x[0], x[1], h, w];
        }
        let stages = [
            ("layer1", &self.layer1),
            ("layer2", &self.layer2),
            ("layer3", &self.layer3),
            ("layer4", &self.layer4),
        ];
        for (name, stage) in stages {
            for (i, block) in stage.iter().enumerate() {
                x = block.batch_norm_inputs(&format!("{name}.{i}"), x, &mut out);
            }
        }
        out
    }

    /// The first BatchNorm layer normalising with batch statistics that would see one value
    /// per channel, as an error ([`VisionModel::check_training_batch`]).
    fn first_single_value_batch_norm(&self, images: [usize; 4]) -> Result<()> {
        super::block::check_batch_norm_inputs(self.batch_norm_inputs(images), images)
    }

    /// Feature maps after the last stage: `[B, num_features, H/32, W/32]` for the ImageNet stem.
    fn feature_maps(&self, images: Tensor<4>) -> Tensor<4> {
        let mut x = batch_norm_relu(&self.bn1, conv2d(&self.conv1, images));
        if let Some(pool) = &self.maxpool {
            x = max_pool2d(pool, x);
        }
        for block in self
            .layer1
            .iter()
            .chain(&self.layer2)
            .chain(&self.layer3)
            .chain(&self.layer4)
        {
            x = block.forward(x);
        }
        x
    }
}

/// torchvision's ResNet stages: the stem (`conv1`, `bn1`, the parameter-free max-pool), the four
/// residual stages, and the `fc` head.
fn resnet_stages() -> Stages {
    Stages::new(vec![
        StageSpec::new("stem", &["conv1", "bn1"]),
        StageSpec::new("layer1", &["layer1"]),
        StageSpec::new("layer2", &["layer2"]),
        StageSpec::new("layer3", &["layer3"]),
        StageSpec::new("layer4", &["layer4"]),
        StageSpec::new("fc", &["fc"]),
    ])
}

super::contract::inherent_freezing!(ResNet);

impl VisionModel for ResNet {
    type Config = ResNetConfig;
    /// Feature maps `[B, num_features, h, w]` (`h = H/32` for the ImageNet stem).
    type Features = Tensor<4>;
    type Inference = FusedResNet;

    fn config(&self) -> ResNetConfig {
        self.config.clone()
    }

    fn arch(&self) -> String {
        self.config
            .arch_name()
            .unwrap_or("resnet(custom)")
            .to_string()
    }

    fn stages(&self) -> Stages {
        resnet_stages()
    }

    /// ImageNet's mean and standard deviation, what every torchvision ResNet weight expects.
    fn normalization(&self) -> Normalize {
        Normalize::imagenet()
    }

    /// Feature maps after `layer4`: `[B, num_features, H/32, W/32]` for the ImageNet stem
    /// (`[B, num_features, H/8, W/8]` for the CIFAR stem).
    fn forward_features(&self, images: Tensor<4>) -> Tensor<4> {
        self.feature_maps(images)
    }

    /// Global average pool to `[B, num_features]`, then `fc` unless `pre_logits`.
    fn forward_head(&self, features: Tensor<4>, pre_logits: bool) -> Tensor<2> {
        let pooled = self.avgpool.forward(features).flatten(1, 3);
        if pre_logits {
            pooled
        } else {
            self.fc.forward(pooled)
        }
    }

    fn forward_classifier(&self, pre_logits: Tensor<2>) -> Tensor<2> {
        self.fc.forward(pre_logits)
    }

    /// 512 for ResNet-18/34, 2048 for ResNet-50 and deeper.
    fn num_features(&self) -> usize {
        self.config.num_features()
    }

    fn num_classes(&self) -> usize {
        self.config.num_classes
    }

    fn in_channels(&self) -> usize {
        self.config.in_channels
    }

    /// A fresh `fc` (PyTorch's `nn.Linear` initialisation) for `num_classes` classes.
    fn reset_classifier(mut self, num_classes: usize) -> Result<Self> {
        check_num_classes(num_classes)?;
        let device = self.device();
        self.fc = LinearConfig::new(self.num_features(), num_classes).init(&device);
        self.config.num_classes = num_classes;
        // Re-applying the freeze keeps a fully frozen model's new head frozen too.
        let state = self.freeze.clone();
        Ok(freeze::apply_freeze(self, state))
    }

    fn device(&self) -> Device {
        self.fc.weight.lazy_device()
    }

    fn check_input(&self, dims: [usize; 4]) -> Result<()> {
        self.check_stem_input(dims)
    }

    /// Checks, before any kernel runs, that a forward pass over a batch of shape `images`
    /// `[B, C, H, W]` gives every BatchNorm layer that normalises with batch statistics more
    /// than one value per channel (`B·H·W > 1` at that layer), as PyTorch requires in training
    /// mode. The [`Learner`](crate::train::Learner) calls it for every training batch; call it
    /// yourself before [`forward`](VisionModel::forward) in a custom training loop. Layers in eval
    /// mode (frozen with [`BnPolicy::Frozen`](super::BnPolicy::Frozen), or a model on a device
    /// without autodiff) use their running statistics and always pass.
    ///
    /// # Errors
    /// [`Error::BatchNormSingleValue`](crate::Error::BatchNormSingleValue) naming the first such layer in forward order (e.g.
    /// `layer4.1.bn2` for one 32x32 image through an ImageNet-stem ResNet, whose last stage
    /// has 1x1 maps), with the fix: a larger batch or larger images.
    fn check_training_batch(&self, dims: [usize; 4]) -> Result<()> {
        self.first_single_value_batch_norm(dims)
    }

    /// Folds every BatchNorm (with its running statistics) into the preceding convolution and
    /// drops autodiff: a faster model for inference and for a frozen backbone's features (on
    /// CPU, through the NHWC host engine). Matches `self.valid()` in inference mode up to
    /// float rounding.
    fn for_inference(&self) -> FusedResNet {
        self.for_inference_with(crate::kernels::conv_impl())
    }

    /// torchvision's (and timm's) ResNet names, through [`crate::weights::keymap`].
    fn key_map(&self) -> crate::weights::keymap::KeyMap {
        crate::weights::keymap::KeyMap::ResNet
    }

    fn freeze_state(&self) -> &FreezeState {
        &self.freeze
    }

    fn set_freeze_state(&mut self, state: FreezeState) {
        self.freeze = state;
    }
}
