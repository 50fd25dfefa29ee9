//! The ResNet network of He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016),
//! with torchvision's exact topology and parameter names (`conv1`, `bn1`, `layer1..layer4`,
//! `downsample`, `fc`) and timm's head contract (`forward_features`, `num_features`,
//! [`with_num_classes`](ResNet::with_num_classes) / [`reset_classifier`](ResNet::reset_classifier)).

use crate::kernels::{batch_norm_relu, conv2d, max_pool2d, pool_output_size};
use burn::module::Module;
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};

use super::block::{BatchNormInput, Block, conv, new_batch_norm, push_conv_bn};
use super::config::{ResNetConfig, Stem};
use super::freeze::FreezeState;
use crate::error::{Error, Result};

/// A ResNet of any depth. Build it with [`ResNetConfig`]; it runs on any Burn device.
///
/// ```
/// use burn::tensor::{Device, Tensor, Distribution};
/// use finetune::model::ResNetConfig;
///
/// let device = Device::flex(); // or Device::default(), a wgpu device, ...
/// let model = ResNetConfig::resnet18(10).with_widths([8, 16, 32, 64]).init(&device);
/// let images = Tensor::<4>::random([2, 3, 32, 32], Distribution::Default, &device);
/// assert_eq!(model.forward(images.clone()).dims(), [2, 10]);
/// assert_eq!(model.forward_features(images).dims(), [2, 64]);
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
    /// The configuration this model was built from (kept in sync by `with_num_classes`).
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

    /// The configuration the model was built from, with the current number of classes.
    pub fn config(&self) -> &ResNetConfig {
        &self.config
    }

    /// Size of the pooled embedding (512 for ResNet-18/34, 2048 for ResNet-50 and deeper).
    pub fn num_features(&self) -> usize {
        self.config.num_features()
    }

    /// Number of classes the head predicts.
    pub fn num_classes(&self) -> usize {
        self.config.num_classes
    }

    /// The device the model's parameters live on.
    pub fn device(&self) -> Device {
        self.fc.weight.lazy_device()
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

    /// Checks, before any kernel runs, that a forward pass over a batch of shape `images`
    /// `[B, C, H, W]` gives every BatchNorm layer that normalises with batch statistics more
    /// than one value per channel (`B·H·W > 1` at that layer), as PyTorch requires in training
    /// mode. The [`Learner`](crate::train::Learner) calls it for every training batch; call it
    /// yourself before [`forward`](Self::forward) in a custom training loop. Layers in eval
    /// mode (frozen with [`BnPolicy::Frozen`](super::BnPolicy::Frozen), or a model on a device
    /// without autodiff) use their running statistics and always pass.
    ///
    /// # Errors
    /// [`Error::BatchNormSingleValue`] naming the first such layer in forward order (e.g.
    /// `layer4.1.bn2` for one 32x32 image through an ImageNet-stem ResNet, whose last stage
    /// has 1x1 maps), with the fix: a larger batch or larger images.
    pub fn check_training_batch(&self, images: [usize; 4]) -> Result<()> {
        let bad = self
            .batch_norm_inputs(images)
            .into_iter()
            .find(|bn| bn.batch_statistics && bn.values_per_channel() <= 1);
        match bad {
            None => Ok(()),
            Some(bn) => Err(Error::BatchNormSingleValue {
                values: bn.values_per_channel(),
                layer: bn.layer,
                input: images,
                batch: bn.dims[0],
                height: bn.dims[2],
                width: bn.dims[3],
            }),
        }
    }

    /// Feature maps after the last stage: `[B, num_features, H/32, W/32]` for the ImageNet stem.
    pub fn forward_feature_maps(&self, images: Tensor<4>) -> Tensor<4> {
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

    /// The pooled embedding `[B, num_features]` that feeds the head (timm's `forward_features`
    /// followed by global pooling).
    pub fn forward_features(&self, images: Tensor<4>) -> Tensor<2> {
        let x = self.avgpool.forward(self.forward_feature_maps(images));
        x.flatten(1, 3)
    }

    /// Applies only the classifier head to pooled embeddings `[B, num_features]`.
    pub fn forward_head(&self, features: Tensor<2>) -> Tensor<2> {
        self.fc.forward(features)
    }

    /// Logits `[B, num_classes]` for images `[B, C, H, W]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward_head(self.forward_features(images))
    }

    /// Replaces the head with a freshly initialised `fc` for `num_classes` classes, on the same
    /// device. The backbone, and its frozen state, are unchanged; the new head is trainable.
    pub fn try_with_num_classes(mut self, num_classes: usize) -> Result<Self> {
        if num_classes == 0 {
            return Err(Error::InvalidConfig(
                "num_classes must be at least 1".into(),
            ));
        }
        let device = self.device();
        self.fc = LinearConfig::new(self.num_features(), num_classes).init(&device);
        self.config.num_classes = num_classes;
        if self.freeze.frozen_through == Some(super::freeze::Stage::Head) {
            // Everything was frozen: keep the new head frozen too, as the state says.
            let state = self.freeze;
            self = self.apply_freeze(state);
        }
        Ok(self)
    }

    /// [`try_with_num_classes`](Self::try_with_num_classes) for a count known to be non-zero.
    ///
    /// # Panics
    /// When `num_classes` is 0.
    pub fn with_num_classes(self, num_classes: usize) -> Self {
        match self.try_with_num_classes(num_classes) {
            Ok(model) => model,
            Err(e) => panic!("{e}"),
        }
    }

    /// Re-initialises the head for `num_classes` classes (timm's `reset_classifier`); the same as
    /// [`with_num_classes`](Self::with_num_classes).
    pub fn reset_classifier(self, num_classes: usize) -> Result<Self> {
        self.try_with_num_classes(num_classes)
    }
}
