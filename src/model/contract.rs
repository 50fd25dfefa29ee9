//! The model contract every architecture implements: timm's (`forward_features` unpooled,
//! `forward_head(x, pre_logits)`, `num_features`, `reset_classifier`), adapted to typed
//! tensors, plus what transfer learning needs from a model: named stages from stem to head,
//! freezing with an explicit BatchNorm policy, the normalisation its weights expect, input
//! checks, a fast inference form, and save/load with configuration and freeze state.
//!
//! Everything above the model — the [`Learner`](crate::train::Learner), evaluation, cached
//! features, parameter summaries, checkpoints, the recipe — is written against
//! [`VisionModel`] only, so a new family plugs in by implementing it (and registering its
//! names in [`AnyModel`](super::AnyModel)).

use std::fmt::Debug;
use std::path::Path;

use burn::module::{Module, ParamGroup};
use burn::tensor::{Device, Tensor};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::freeze::{self, BnPolicy, FreezeState};
use super::stage::{Stage, Stages};
use super::summary::{self, ParamSummary};
use crate::data::Normalize;
use crate::error::{Error, Result};
use crate::weights::keymap::KeyMap;
use crate::weights::{LoadOptions, LoadReport, WeightsFile};

/// A serialisable description that rebuilds an (untrained) model; stored in saved models and
/// checkpoints next to the tensors.
pub trait ModelConfig:
    Clone + Debug + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// The model this configuration builds.
    type Model: VisionModel<Config = Self>;

    /// The family tag written into saved files (`resnet`).
    fn family(&self) -> &'static str;

    /// Rebuilds a configuration saved with family tag `family` (files written before the tag
    /// existed say `resnet`).
    ///
    /// # Errors
    /// A sentence saying why: another family, or an unreadable description.
    fn from_saved(family: &str, config: serde_json::Value) -> std::result::Result<Self, String>;

    /// The description written into saved files (read back by
    /// [`from_saved`](Self::from_saved) with [`family`](Self::family)'s tag).
    ///
    /// # Errors
    /// When the configuration cannot be serialised.
    fn to_saved(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::to_value(self)
    }

    /// Checks bounds and consistency before anything is allocated.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] saying which value is out of range.
    fn validate(&self) -> Result<()>;

    /// How many values (parameters and buffers) the model's tensors hold in all: a file whose
    /// tensors hold a different count does not match this configuration.
    fn num_stored_values(&self) -> u64;

    /// Builds a freshly initialised model on `device` (the family's initialisation, as its
    /// reference implementation does it).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when [`validate`](Self::validate) fails.
    fn try_init(&self, device: &Device) -> Result<Self::Model>;

    /// A short description for error messages (architecture name, or its shape).
    fn describe(&self) -> String;

    /// This configuration as an [`AnyConfig`](super::AnyConfig), for the crate's own families
    /// (`None` for a family registered elsewhere): what lets a weights file's architecture be
    /// compared with a model's.
    fn as_any(&self) -> Option<super::AnyConfig> {
        None
    }
}

/// The inference form of a model (for a ResNet: BatchNorm folded into the convolutions, and on
/// CPU an NHWC engine), used for evaluation and for a frozen backbone during training.
pub trait InferenceModel: Send {
    /// The pooled pre-logits embedding `[B, num_features]` for images `[B, C, H, W]`.
    fn forward_pre_logits(&self, images: Tensor<4>) -> Tensor<2>;
    /// Logits `[B, num_classes]` for images `[B, C, H, W]`.
    fn forward(&self, images: Tensor<4>) -> Tensor<2>;
}

/// The inference form of a family with nothing to fold (ConvNeXt, EfficientNet, MobileNetV3,
/// ViT): the model itself on the device without autodiff, where BatchNorm uses its running
/// statistics and dropout and stochastic depth are off.
#[derive(Clone, Debug)]
pub struct Eval<M>(pub M);

impl<M: VisionModel> InferenceModel for Eval<M> {
    fn forward_pre_logits(&self, images: Tensor<4>) -> Tensor<2> {
        self.0.forward_pre_logits(images)
    }
    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.0.forward(images)
    }
}

/// An image classification network that can be fine-tuned: the contract every architecture of
/// this crate implements (timm's model interface, with typed tensors).
///
/// Shapes: images are `[B, C, H, W]` float tensors, normalised as
/// [`normalization`](Self::normalization) says; logits are `[B, num_classes]`; the pre-logits
/// embedding is `[B, num_features]`.
///
/// ```
/// use burn::tensor::{Device, Distribution, Tensor};
/// use finetune::model::{ResNetConfig, VisionModel};
///
/// let device = Device::flex();
/// let model = ResNetConfig::resnet18(10).with_widths([8, 16, 32, 64]).init(&device);
/// let images = Tensor::<4>::random([2, 3, 64, 64], Distribution::Default, &device);
/// let maps = model.forward_features(images.clone()); // unpooled: [2, 64, 2, 2]
/// assert_eq!(maps.dims(), [2, 64, 2, 2]);
/// assert_eq!(model.forward_head(maps, true).dims(), [2, 64]); // pooled pre-logits
/// assert_eq!(model.forward(images).dims(), [2, 10]);
/// let model = model.freeze_to("layer3")?; // stem..layer3 frozen
/// assert_eq!(model.param_summary().stage("layer3").trainable, 0);
/// # Ok::<(), finetune::Error>(())
/// ```
pub trait VisionModel: Module + 'static {
    /// The configuration type that rebuilds this model.
    type Config: ModelConfig<Model = Self>;
    /// What [`forward_features`](Self::forward_features) returns: unpooled feature maps
    /// `[B, C, h, w]` for CNNs, tokens `[B, N, D]` for transformers.
    type Features: Clone + Send;
    /// The inference form returned by [`for_inference`](Self::for_inference).
    type Inference: InferenceModel;

    /// The configuration the model was built from, with the current number of classes.
    fn config(&self) -> Self::Config;

    /// The architecture name in timm/torchvision's spelling (`resnet50`), or a description of
    /// a custom shape.
    fn arch(&self) -> String;

    /// The stages from stem to head, in forward order; the last one is the classifier head
    /// and every parameter belongs to exactly one stage.
    fn stages(&self) -> Stages;

    /// The input normalisation the architecture's pretrained weights expect.
    fn normalization(&self) -> Normalize;

    /// Unpooled features after the last stage (timm's `forward_features`).
    fn forward_features(&self, images: Tensor<4>) -> Self::Features;

    /// timm's `forward_head`: pools `features` into the pre-logits embedding
    /// `[B, num_features]`, then (unless `pre_logits`) applies the classifier.
    fn forward_head(&self, features: Self::Features, pre_logits: bool) -> Tensor<2>;

    /// Applies only the classifier (the last stage's layer) to pre-logits embeddings
    /// `[B, num_features]`, giving logits `[B, num_classes]`; what trains on cached features.
    fn forward_classifier(&self, pre_logits: Tensor<2>) -> Tensor<2>;

    /// Logits `[B, num_classes]` for images `[B, C, H, W]`.
    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward_head(self.forward_features(images), false)
    }

    /// The pooled pre-logits embedding `[B, num_features]` for images `[B, C, H, W]`.
    fn forward_pre_logits(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward_head(self.forward_features(images), true)
    }

    /// Size of the pre-logits embedding (512 for ResNet-18, 2048 for ResNet-50).
    fn num_features(&self) -> usize;

    /// Number of classes the head predicts.
    fn num_classes(&self) -> usize;

    /// Channels of the images the stem takes (3 for RGB; timm's `in_chans`).
    fn in_channels(&self) -> usize;

    /// Replaces the classifier with a freshly initialised one for `num_classes` classes on the
    /// same device (timm's `reset_classifier`). The rest of the model and its freeze state are
    /// unchanged; the new head is trainable unless the whole model was frozen.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when `num_classes` is 0.
    fn reset_classifier(self, num_classes: usize) -> Result<Self>;

    /// [`reset_classifier`](Self::reset_classifier) for a count known to be non-zero.
    ///
    /// # Panics
    /// When `num_classes` is 0.
    fn with_num_classes(self, num_classes: usize) -> Self {
        match self.reset_classifier(num_classes) {
            Ok(model) => model,
            Err(e) => panic!("{e}"),
        }
    }

    /// The device the model's parameters live on.
    fn device(&self) -> Device;

    /// Checks that a batch of shape `[B, C, H, W]` fits the model before any kernel runs.
    ///
    /// # Errors
    /// [`Error::InputShape`] saying what does not fit and what to do.
    fn check_input(&self, dims: [usize; 4]) -> Result<()>;

    /// Checks that a training forward pass over `[B, C, H, W]` gives every normalisation layer
    /// that uses batch statistics more than one value per channel (PyTorch's rule).
    ///
    /// # Errors
    /// [`Error::BatchNormSingleValue`] naming the first such layer.
    fn check_training_batch(&self, dims: [usize; 4]) -> Result<()>;

    /// How this model's parameter paths correspond to the reference implementation's
    /// state_dict keys (torchvision's names), module by module.
    fn key_map(&self) -> KeyMap;

    /// Loads a PyTorch state_dict in the family's reference names (torchvision's / timm's)
    /// from an opened weights file, strictly or backbone only ([`LoadOptions`]): the family's
    /// [`key_map`](Self::key_map) on top of the shared reader (pickle allow-list, state_dict
    /// selection, wrapper prefixes, strict reports). On error the model is unchanged; on
    /// success its freeze state is re-applied.
    ///
    /// # Errors
    /// [`WeightsError`](crate::weights::WeightsError) naming the tensors that disagree, or the
    /// architecture the file holds.
    fn load_state_dict(
        &mut self,
        file: &mut WeightsFile,
        options: &LoadOptions,
    ) -> Result<LoadReport> {
        file.load_model(self, options)
    }

    /// Opens a `.pth` / `.safetensors` file and loads it ([`load_state_dict`](Self::load_state_dict)).
    ///
    /// # Errors
    /// As [`WeightsFile::open_with`] and [`load_state_dict`](Self::load_state_dict).
    fn load_weights(
        &mut self,
        path: impl AsRef<Path>,
        options: &LoadOptions,
    ) -> Result<LoadReport> {
        WeightsFile::open_with(path, options)?.load_into(self, options)
    }

    /// Loads everything but the classifier head (fastai / timm's pretrained-backbone start):
    /// the file's head, whatever its number of classes, is not used; the report lists it as
    /// skipped.
    ///
    /// # Errors
    /// As [`load_weights`](Self::load_weights).
    fn load_backbone(&mut self, path: impl AsRef<Path>) -> Result<LoadReport> {
        self.load_weights(path, &LoadOptions::backbone_only())
    }

    /// The inference form (normalisation folded where the family can), for evaluation and a
    /// frozen backbone.
    fn for_inference(&self) -> Self::Inference;

    /// The freeze specification currently applied.
    fn freeze_state(&self) -> &FreezeState;

    /// Records the freeze specification; only [`apply_freeze`](freeze::apply_freeze) calls it
    /// (use [`freeze_to`](Self::freeze_to) and friends).
    #[doc(hidden)]
    fn set_freeze_state(&mut self, state: FreezeState);

    /// Freezes every stage from the stem through `stage` (inclusive, by name: `layer3`, or
    /// `head` for the last); later stages train (fastai's `freeze_to`).
    ///
    /// # Errors
    /// [`Error::UnknownStage`] listing the model's stages.
    fn freeze_to(self, stage: impl Into<Stage>) -> Result<Self> {
        let stage = stage.into();
        self.stages().index_of(&stage)?;
        let bn = self.freeze_state().bn;
        Ok(freeze::apply_freeze(
            self,
            FreezeState {
                frozen_through: Some(stage),
                bn,
            },
        ))
    }

    /// Freezes everything but the classifier head (the "fixed feature extractor"), keeping the
    /// current [`BnPolicy`].
    fn freeze_backbone(self) -> Self {
        let stages = self.stages();
        let last_backbone = stages.len().saturating_sub(2);
        let frozen_through = stages.get(last_backbone).map(|s| s.stage());
        let bn = self.freeze_state().bn;
        freeze::apply_freeze(self, FreezeState { frozen_through, bn })
    }

    /// Freezes the whole model, head included.
    fn freeze(self) -> Self {
        let frozen_through = self.stages().head().map(|s| s.stage());
        let bn = self.freeze_state().bn;
        freeze::apply_freeze(self, FreezeState { frozen_through, bn })
    }

    /// Makes every parameter trainable again, keeping the [`BnPolicy`] for the next freeze.
    fn unfreeze(self) -> Self {
        let bn = self.freeze_state().bn;
        freeze::apply_freeze(
            self,
            FreezeState {
                frozen_through: None,
                bn,
            },
        )
    }

    /// Sets the BatchNorm policy for frozen stages and re-applies the current freeze.
    fn with_bn_policy(self, bn: BnPolicy) -> Self {
        let frozen_through = self.freeze_state().frozen_through.clone();
        freeze::apply_freeze(self, FreezeState { frozen_through, bn })
    }

    /// Whether only the classifier trains and the frozen backbone's BatchNorm layers use their
    /// running statistics: the backbone then runs without autodiff, and its features can be
    /// computed once.
    fn is_head_only(&self) -> bool {
        let stages = self.stages();
        let state = self.freeze_state();
        state.bn == BnPolicy::Frozen
            && state.frozen_index(&stages) == Some(stages.len().saturating_sub(2))
    }

    /// Every parameter outside the classifier head (what a backbone learning-rate multiplier
    /// applies to).
    fn backbone_group(&self) -> ParamGroup {
        freeze::backbone_group(&self.stages())
    }

    /// Total / trainable / frozen parameter counts per stage.
    fn param_summary(&self) -> ParamSummary {
        summary::param_summary(self)
    }

    /// `(path, shape)` of every tensor of the model in Burn's naming, running statistics
    /// included, in traversal order.
    fn tensor_paths(&self) -> Vec<(String, Vec<usize>)> {
        summary::tensor_paths(self)
    }

    /// Saves parameters, running statistics, configuration and freeze state to one burnpack
    /// file (conventionally `*.bpk`), replacing an existing file atomically.
    ///
    /// # Errors
    /// [`Error::ModelWrite`] or [`Error::Io`] when writing fails.
    fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        super::io::save(self, path.as_ref())
    }

    /// Loads a model written by [`save`](Self::save) onto `device`, strictly: every tensor
    /// must be in the file with the right shape and the file must hold nothing else; the saved
    /// freeze state is re-applied.
    ///
    /// # Errors
    /// [`Error::ModelFile`] saying what is wrong with the file (another family, a damaged or
    /// edited configuration, missing or extra tensors).
    fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        super::io::load(path.as_ref(), device)
    }
}

/// Inherent `freeze` / `unfreeze` for a concrete model type, so that `model.unfreeze()` means
/// [`VisionModel::unfreeze`] even where Burn's `Module` (whose `freeze` / `unfreeze` flip every
/// parameter without recording a freeze state) is also in scope. Generic code writes
/// `VisionModel::unfreeze(model)`.
macro_rules! inherent_freezing {
    ($ty:ty) => {
        impl $ty {
            /// [`VisionModel::freeze`]: freezes the whole model, head included, recording the
            /// freeze state (Burn's `Module::freeze` does not).
            pub fn freeze(self) -> Self {
                <Self as $crate::model::VisionModel>::freeze(self)
            }

            /// [`VisionModel::unfreeze`]: everything trainable again, keeping the BatchNorm
            /// policy for the next freeze (Burn's `Module::unfreeze` records nothing).
            pub fn unfreeze(self) -> Self {
                <Self as $crate::model::VisionModel>::unfreeze(self)
            }
        }
    };
}
pub(crate) use inherent_freezing;

/// The [`VisionModel`] methods every family of this crate writes the same way, for a model with
/// `config: $config` (`num_classes`, `in_channels`, `num_features()`), `freeze: FreezeState`
/// and a `head: Linear` classifier: config, shape queries, device, freeze state, and
/// `reset_classifier` with PyTorch's default `nn.Linear` head (what the tutorial's replacement
/// head and timm's `reset_classifier` get; the family's own head init applies at construction).
macro_rules! family_contract {
    ($config:ty) => {
        fn config(&self) -> $config {
            self.config.clone()
        }

        fn num_features(&self) -> usize {
            self.config.num_features()
        }

        fn num_classes(&self) -> usize {
            self.config.num_classes
        }

        fn in_channels(&self) -> usize {
            self.config.in_channels
        }

        fn reset_classifier(mut self, num_classes: usize) -> $crate::error::Result<Self> {
            $crate::model::contract::check_num_classes(num_classes)?;
            let device = self.device();
            self.head =
                $crate::model::layers::replacement_head(self.num_features(), num_classes, &device);
            self.config.num_classes = num_classes;
            let state = self.freeze.clone();
            Ok($crate::model::freeze::apply_freeze(self, state))
        }

        fn device(&self) -> burn::tensor::Device {
            self.head.weight.lazy_device()
        }

        fn freeze_state(&self) -> &$crate::model::FreezeState {
            &self.freeze
        }

        fn set_freeze_state(&mut self, state: $crate::model::FreezeState) {
            self.freeze = state;
        }
    };
}
pub(crate) use family_contract;

/// The [`ModelConfig`] impl of a family of this crate whose config has inherent `validate`,
/// `try_init`, `count_values() -> (parameters, buffers)` and `describe_shape`: `$family` is the
/// tag saved in files, `$name` the family in messages, `$variant` its [`AnyConfig`] variant.
macro_rules! family_config {
    ($config:ty, $model:ty, $family:literal, $name:literal, $variant:ident) => {
        impl $crate::model::contract::ModelConfig for $config {
            type Model = $model;

            fn family(&self) -> &'static str {
                $family
            }

            fn from_saved(
                family: &str,
                config: serde_json::Value,
            ) -> std::result::Result<Self, String> {
                if family != $family {
                    return Err(format!(
                        "it holds a '{family}' model, not {}: load it with that family's type (or AnyModel)",
                        $name
                    ));
                }
                serde_json::from_value(config)
                    .map_err(|e| format!("unreadable model description: {e}"))
            }

            fn validate(&self) -> $crate::error::Result<()> {
                <$config>::validate(self)
            }

            fn num_stored_values(&self) -> u64 {
                let (params, buffers) = self.count_values();
                params.saturating_add(buffers)
            }

            fn try_init(&self, device: &burn::tensor::Device) -> $crate::error::Result<$model> {
                <$config>::try_init(self, device)
            }

            fn describe(&self) -> String {
                self.describe_shape()
            }

            fn as_any(&self) -> Option<$crate::model::AnyConfig> {
                Some($crate::model::AnyConfig::$variant(self.clone()))
            }
        }
    };
}
pub(crate) use family_config;

/// The error for a zero class count, shared by every family.
pub(crate) fn check_num_classes(num_classes: usize) -> Result<()> {
    if num_classes == 0 {
        return Err(Error::InvalidConfig(
            "num_classes must be at least 1".into(),
        ));
    }
    Ok(())
}
