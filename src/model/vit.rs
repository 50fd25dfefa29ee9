//! The Vision Transformer (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021) with
//! torchvision's topology, initialisation and parameter names
//! (`torchvision.models.vision_transformer`): a strided patch-projection convolution
//! (`conv_proj`), a class token, learned position embeddings, pre-norm encoder blocks
//! (multi-head self-attention and a GELU MLP), a final LayerNorm, and a Linear head on the class
//! token.
//!
//! Unlike torchvision, which asserts the configured image size, the model takes any image size
//! that is a multiple of the patch size: the position embeddings are resized to the patch grid
//! as torchvision's `interpolate_embeddings` does (bicubic, `align_corners=True`).

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::nn::{Dropout, DropoutConfig, Initializer, LayerNorm, Linear};
use burn::tensor::module::{attention, interpolate};
use burn::tensor::ops::{AttentionModuleOptions, InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Tensor};

use super::contract::{Eval, VisionModel, check_num_classes};
use super::freeze::FreezeState;
use super::input::check_image_input;
use super::layers::{Activation, ConvInit, ConvSpec, layer_norm, linear};
use super::stage::{StageSpec, Stages};
use crate::data::Normalize;
use crate::error::{Error, Result};
use crate::kernels::conv2d;
use crate::weights::keymap::{KeyMap, KeyPair};

/// LayerNorm epsilon of torchvision's ViT.
const EPS: f64 = 1e-6;

/// Configuration of a Vision Transformer (torchvision's `VisionTransformer(image_size,
/// patch_size, num_layers, num_heads, hidden_dim, mlp_dim, dropout, attention_dropout,
/// num_classes)`).
///
/// ```
/// use finetune::model::VisionTransformerConfig;
/// let config = VisionTransformerConfig::from_name("vit_b_16", 10).unwrap();
/// assert_eq!((config.num_layers, config.hidden_dim, config.seq_length()), (12, 768, 197));
/// ```
#[derive(Config, Debug, PartialEq)]
pub struct VisionTransformerConfig {
    /// The image side the position embeddings are made for.
    pub image_size: usize,
    /// Side of the square patches.
    pub patch_size: usize,
    /// Number of encoder blocks.
    pub num_layers: usize,
    /// Attention heads per block (`hidden_dim` must be a multiple).
    pub num_heads: usize,
    /// Token width.
    pub hidden_dim: usize,
    /// Hidden width of each block's MLP.
    pub mlp_dim: usize,
    /// Classes of the head.
    pub num_classes: usize,
    /// Dropout after the position embedding, attention output and MLP layers.
    #[config(default = 0.0)]
    pub dropout: f64,
    /// Input channels (3 for RGB).
    #[config(default = 3)]
    pub in_channels: usize,
}

/// `(name, patch, layers, heads, hidden, mlp)` of the registered ViTs (image size 224).
const VARIANTS: [(&str, usize, usize, usize, usize, usize); 3] = [
    ("vit_b_16", 16, 12, 12, 768, 3072),
    ("vit_b_32", 32, 12, 12, 768, 3072),
    ("vit_l_16", 16, 24, 16, 1024, 4096),
];

impl VisionTransformerConfig {
    /// The registered architecture names.
    pub const NAMES: [&'static str; 3] = [VARIANTS[0].0, VARIANTS[1].0, VARIANTS[2].0];

    /// The configuration of a registered name, for 224x224 images.
    pub fn from_name(name: &str, num_classes: usize) -> Option<Self> {
        let &(_, p, l, h, d, m) = VARIANTS.iter().find(|v| v.0 == name)?;
        Some(Self::new(224, p, l, h, d, m, num_classes))
    }

    /// The registered name of this shape (any image size), if it is one.
    pub fn arch_name(&self) -> Option<&'static str> {
        VARIANTS
            .iter()
            .find(|&&(_, p, l, h, d, m)| {
                (p, l, h, d, m)
                    == (
                        self.patch_size,
                        self.num_layers,
                        self.num_heads,
                        self.hidden_dim,
                        self.mlp_dim,
                    )
            })
            .map(|v| v.0)
    }

    /// Patches per side at [`image_size`](Self::image_size).
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size.max(1)
    }

    /// Tokens: the patches and the class token.
    pub fn seq_length(&self) -> usize {
        self.grid() * self.grid() + 1
    }

    /// The pre-logits embedding size (`hidden_dim`).
    pub fn num_features(&self) -> usize {
        self.hidden_dim
    }

    /// Values from the topology alone (saturating: [`validate`](Self::validate) bounds every
    /// size before it is called).
    fn count_values(&self) -> (u64, u64) {
        let n = |v: usize| v.min(1 << 24) as u64;
        let (d, m, c) = (n(self.hidden_dim), n(self.mlp_dim), n(self.num_classes));
        let p = n(self.patch_size);
        let stem = n(self.in_channels) * d * p * p + d + d + n(self.seq_length()) * d;
        let block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (d * m + m) + (m * d + d);
        let params = stem
            .saturating_add(block.saturating_mul(n(self.num_layers)))
            .saturating_add(2 * d + d * c + c);
        (params, 0)
    }

    /// Checks every size before anything is allocated.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the value out of range.
    pub fn validate(&self) -> Result<()> {
        check_num_classes(self.num_classes)?;
        let bounded = [
            ("image_size", self.image_size, 1 << 16),
            ("patch_size", self.patch_size, 1 << 16),
            ("num_layers", self.num_layers, 1 << 12),
            ("num_heads", self.num_heads, 1 << 16),
            ("hidden_dim", self.hidden_dim, 1 << 16),
            ("mlp_dim", self.mlp_dim, 1 << 18),
            ("in_channels", self.in_channels, 1 << 14),
            ("num_classes", self.num_classes, 1 << 24),
        ];
        if let Some((name, value, max)) = bounded
            .into_iter()
            .find(|&(_, v, max)| !(1..=max).contains(&v))
        {
            return Err(Error::InvalidConfig(format!(
                "the ViT's {name} is {value}: it must be between 1 and {max}"
            )));
        }
        if !self.image_size.is_multiple_of(self.patch_size) {
            return Err(Error::InvalidConfig(format!(
                "the ViT's image_size {} must be a multiple of its patch_size {}",
                self.image_size, self.patch_size
            )));
        }
        if !self.hidden_dim.is_multiple_of(self.num_heads) {
            return Err(Error::InvalidConfig(format!(
                "the ViT's hidden_dim {} must be a multiple of its num_heads {}",
                self.hidden_dim, self.num_heads
            )));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::InvalidConfig(format!(
                "dropout must be in [0, 1), not {}",
                self.dropout
            )));
        }
        if self.count_values().0 > super::MAX_PARAMS {
            return Err(Error::InvalidConfig(format!(
                "the configuration describes {} parameters, more than the {} this crate builds",
                self.count_values().0,
                super::MAX_PARAMS
            )));
        }
        Ok(())
    }

    /// Builds the model, initialised as torchvision does (`conv_proj`
    /// `trunc_normal_(std=sqrt(1/fan_in))`, class token 0, position embedding
    /// `normal_(std=0.02)`, MLP Xavier-uniform with `normal_(std=1e-6)` biases, attention as
    /// `nn.MultiheadAttention`, head 0).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when [`validate`](Self::validate) fails.
    pub fn try_init(&self, device: &Device) -> Result<VisionTransformer> {
        self.validate()?;
        Ok(VisionTransformer::from_config(self, device))
    }
}

/// `nn.MultiheadAttention` with its packed input projection (`in_proj_weight` `[3D, D]`, as
/// PyTorch stores it).
#[derive(Module, Debug)]
pub struct SelfAttention {
    /// Query, key and value projections stacked: `[3D, D]`.
    pub in_proj_weight: Param<Tensor<2>>,
    /// Their biases: `[3D]`.
    pub in_proj_bias: Param<Tensor<1>>,
    /// Output projection.
    pub out_proj: Linear,
    /// Number of heads.
    pub num_heads: usize,
}

impl SelfAttention {
    fn new(dim: usize, heads: usize, device: &Device) -> Self {
        // xavier_uniform_ on the whole [3D, D] matrix.
        let bound = (6.0 / (dim + 3 * dim) as f64).sqrt();
        let out_bound = 1.0 / (dim as f64).sqrt();
        SelfAttention {
            in_proj_weight: Initializer::Uniform {
                min: -bound,
                max: bound,
            }
            .init([3 * dim, dim], device),
            in_proj_bias: Initializer::Zeros.init([3 * dim], device),
            out_proj: linear(
                dim,
                dim,
                Initializer::Uniform {
                    min: -out_bound,
                    max: out_bound,
                },
                Initializer::Zeros,
                device,
            ),
            num_heads: heads,
        }
    }

    /// `[B, N, D]` -> `[B, N, D]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, n, d] = x.dims();
        let h = self.num_heads;
        let qkv = x.matmul(self.in_proj_weight.val().transpose().unsqueeze::<3>())
            + self.in_proj_bias.val().unsqueeze::<3>();
        // [B, N, 3, H, d/H] -> three [B, H, N, d/H]
        let qkv = qkv.reshape([b, n, 3, h, d / h]).permute([2, 0, 3, 1, 4]);
        let part = |i: usize| qkv.clone().narrow(0, i, 1).reshape([b, h, n, d / h]);
        let out = attention(
            part(0),
            part(1),
            part(2),
            None,
            None,
            AttentionModuleOptions::default(),
        );
        self.out_proj
            .forward(out.permute([0, 2, 1, 3]).reshape([b, n, d]))
    }
}

/// One pre-norm encoder block (torchvision's `EncoderBlock`).
#[derive(Module, Debug)]
pub struct EncoderBlock {
    /// LayerNorm before attention.
    pub ln_1: LayerNorm,
    /// Multi-head self-attention.
    pub self_attention: SelfAttention,
    /// LayerNorm before the MLP.
    pub ln_2: LayerNorm,
    /// MLP: `D -> mlp_dim` (`mlp.0`).
    pub mlp_fc1: Linear,
    /// MLP: `mlp_dim -> D` (`mlp.3`).
    pub mlp_fc2: Linear,
    /// Dropout after attention and after each MLP layer.
    pub dropout: Dropout,
}

impl EncoderBlock {
    fn new(config: &VisionTransformerConfig, device: &Device) -> Self {
        let (d, m) = (config.hidden_dim, config.mlp_dim);
        let bias = Initializer::Normal {
            mean: 0.0,
            std: 1e-6,
        };
        let xavier = Initializer::XavierUniform { gain: 1.0 };
        EncoderBlock {
            ln_1: layer_norm(d, EPS, device),
            self_attention: SelfAttention::new(d, config.num_heads, device),
            ln_2: layer_norm(d, EPS, device),
            mlp_fc1: linear(d, m, xavier.clone(), bias.clone(), device),
            mlp_fc2: linear(m, d, xavier, bias, device),
            dropout: DropoutConfig::new(config.dropout).init(),
        }
    }

    /// `[B, N, D]` -> `[B, N, D]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let y = self.self_attention.forward(self.ln_1.forward(x.clone()));
        let x = x + self.dropout.forward(y);
        let y = Activation::GELU.forward(self.mlp_fc1.forward(self.ln_2.forward(x.clone())));
        let y = self.mlp_fc2.forward(self.dropout.forward(y));
        x + self.dropout.forward(y)
    }
}

/// A Vision Transformer; build it with [`VisionTransformerConfig`].
///
/// ```
/// use burn::tensor::{Device, Distribution, Tensor};
/// use finetune::model::{VisionModel, VisionTransformerConfig};
///
/// let device = Device::flex();
/// let model = VisionTransformerConfig::new(32, 8, 1, 2, 16, 32, 10).try_init(&device)?;
/// let images = Tensor::<4>::random([2, 3, 32, 32], Distribution::Default, &device);
/// assert_eq!(model.forward_features(images.clone()).dims(), [2, 17, 16]); // tokens
/// assert_eq!(model.forward(images).dims(), [2, 10]);
/// # Ok::<(), finetune::Error>(())
/// ```
#[derive(Module, Debug)]
pub struct VisionTransformer {
    /// Patch projection: `patch x patch` convolution with stride `patch` (`conv_proj`).
    pub conv_proj: Conv2d,
    /// The class token `[1, 1, D]` (`class_token`).
    pub class_token: Param<Tensor<3>>,
    /// Position embeddings `[1, N + 1, D]` (`encoder.pos_embedding`).
    pub pos_embedding: Param<Tensor<3>>,
    /// Dropout after adding the position embeddings.
    pub dropout: Dropout,
    /// The encoder blocks (`encoder.layers.encoder_layer_i`).
    pub layers: Vec<EncoderBlock>,
    /// The final LayerNorm (`encoder.ln`).
    pub ln: LayerNorm,
    /// The classifier on the class token (`heads.head`).
    pub head: Linear,
    #[module(skip)]
    pub(crate) config: VisionTransformerConfig,
    #[module(skip)]
    pub(crate) freeze: FreezeState,
}

impl VisionTransformer {
    fn from_config(config: &VisionTransformerConfig, device: &Device) -> Self {
        let d = config.hidden_dim;
        let p = config.patch_size;
        VisionTransformer {
            conv_proj: ConvSpec::new(config.in_channels, d, p)
                .stride(p)
                .bias()
                .init_padded(0, ConvInit::TruncNormalFanIn, device),
            class_token: Initializer::Zeros.init([1, 1, d], device),
            pos_embedding: Initializer::Normal {
                mean: 0.0,
                std: 0.02,
            }
            .init([1, config.seq_length(), d], device),
            dropout: DropoutConfig::new(config.dropout).init(),
            layers: (0..config.num_layers)
                .map(|_| EncoderBlock::new(config, device))
                .collect(),
            ln: layer_norm(d, EPS, device),
            head: Self::new_head(d, config.num_classes, device),
            config: config.clone(),
            freeze: FreezeState::default(),
        }
    }

    fn new_head(features: usize, classes: usize, device: &Device) -> Linear {
        linear(
            features,
            classes,
            Initializer::Zeros,
            Initializer::Zeros,
            device,
        )
    }

    /// The position embeddings for a `grid_h` x `grid_w` patch grid: the stored ones, or
    /// (another grid) their patch part resized bicubically with aligned corners, as
    /// torchvision's `interpolate_embeddings` does; the class token's embedding is kept.
    pub fn position_embeddings(&self, grid_h: usize, grid_w: usize) -> Tensor<3> {
        let pos = self.pos_embedding.val();
        let g = self.config.grid();
        if (grid_h, grid_w) == (g, g) {
            return pos;
        }
        let d = self.config.hidden_dim;
        let class = pos.clone().narrow(1, 0, 1);
        let patches = pos
            .narrow(1, 1, g * g)
            .reshape([1, g, g, d])
            .permute([0, 3, 1, 2]);
        let mut options = InterpolateOptions::new(InterpolateMode::Bicubic);
        options.align_corners = true;
        options.output_size = Some([grid_h, grid_w]);
        let resized = interpolate(patches, options)
            .permute([0, 2, 3, 1])
            .reshape([1, grid_h * grid_w, d]);
        Tensor::cat(vec![class, resized], 1)
    }
}

super::contract::inherent_freezing!(VisionTransformer);

impl VisionModel for VisionTransformer {
    type Config = VisionTransformerConfig;
    /// Tokens after the final LayerNorm `[B, 1 + h * w, D]`, the class token first.
    type Features = Tensor<3>;
    type Inference = Eval<VisionTransformer>;

    super::contract::family_contract!(VisionTransformerConfig);

    fn arch(&self) -> String {
        self.config.arch_name().unwrap_or("vit(custom)").to_string()
    }

    /// `patch_embed` (projection, class token, position embeddings), `blocks1` .. `blocks4`
    /// (the encoder blocks in four equal groups, the last with the final LayerNorm), `heads`.
    fn stages(&self) -> Stages {
        const NAMES: [&str; 4] = ["blocks1", "blocks2", "blocks3", "blocks4"];
        let n = self.layers.len();
        let mut specs = vec![StageSpec::new(
            "patch_embed",
            &["conv_proj", "class_token", "pos_embedding", "dropout"],
        )];
        for (g, name) in NAMES.iter().enumerate() {
            let (start, end) = (g * n / 4, (g + 1) * n / 4);
            let mut modules: Vec<String> = (start..end).map(|i| format!("layers.{i}")).collect();
            if g == 3 {
                modules.push("ln".into());
            }
            specs.push(StageSpec { name, modules });
        }
        specs.push(StageSpec::new("heads", &["head"]));
        Stages::new(specs)
    }

    fn normalization(&self) -> Normalize {
        Normalize::imagenet()
    }

    fn forward_features(&self, images: Tensor<4>) -> Tensor<3> {
        let x = conv2d(&self.conv_proj, images);
        let [b, d, gh, gw] = x.dims();
        let x = x.reshape([b, d, gh * gw]).swap_dims(1, 2);
        let class = self.class_token.val().expand([b, 1, d]);
        let x = Tensor::cat(vec![class, x], 1) + self.position_embeddings(gh, gw);
        let mut x = self.dropout.forward(x);
        for layer in &self.layers {
            x = layer.forward(x);
        }
        self.ln.forward(x)
    }

    /// The class token (the pre-logits), then the Linear head.
    fn forward_head(&self, features: Tensor<3>, pre_logits: bool) -> Tensor<2> {
        let [b, _, d] = features.dims();
        let x = features.narrow(1, 0, 1).reshape([b, d]);
        if pre_logits { x } else { self.head.forward(x) }
    }

    fn forward_classifier(&self, pre_logits: Tensor<2>) -> Tensor<2> {
        self.head.forward(pre_logits)
    }

    /// Images whose sides are multiples of the patch size (any such size: the position
    /// embeddings are resized to the grid).
    fn check_input(&self, dims: [usize; 4]) -> Result<()> {
        let p = self.config.patch_size;
        check_image_input(dims, self.config.in_channels, "conv_proj", p, Some(p))
    }

    /// LayerNorm only: every batch works.
    fn check_training_batch(&self, _dims: [usize; 4]) -> Result<()> {
        Ok(())
    }

    fn key_map(&self) -> KeyMap {
        let mut pairs = vec![
            KeyPair::new("conv_proj", "conv_proj"),
            KeyPair::new("class_token", "class_token"),
            KeyPair::new("pos_embedding", "encoder.pos_embedding"),
        ];
        for i in 0..self.layers.len() {
            let (o, r) = (
                format!("layers.{i}"),
                format!("encoder.layers.encoder_layer_{i}"),
            );
            pairs.push(KeyPair::new(format!("{o}.ln_1"), format!("{r}.ln_1")));
            let attn = |name: &str| {
                (
                    format!("{o}.self_attention.{name}"),
                    format!("{r}.self_attention.{name}"),
                )
            };
            for name in ["in_proj_weight", "in_proj_bias"] {
                let (o, r) = attn(name);
                pairs.push(KeyPair::new(o, r));
            }
            let (o_out, r_out) = attn("out_proj");
            pairs.push(KeyPair::linear(o_out, r_out));
            pairs.push(KeyPair::new(format!("{o}.ln_2"), format!("{r}.ln_2")));
            pairs.push(KeyPair::linear(
                format!("{o}.mlp_fc1"),
                format!("{r}.mlp.0"),
            ));
            pairs.push(KeyPair::linear(
                format!("{o}.mlp_fc2"),
                format!("{r}.mlp.3"),
            ));
            // The names of torchvision's published ViT files (`MLPBlock` before version 2:
            // torchvision renames them on load); only ever read, the names above are written.
            pairs.push(KeyPair::linear(
                format!("{o}.mlp_fc1"),
                format!("{r}.mlp.linear_1"),
            ));
            pairs.push(KeyPair::linear(
                format!("{o}.mlp_fc2"),
                format!("{r}.mlp.linear_2"),
            ));
        }
        pairs.push(KeyPair::new("ln", "encoder.ln"));
        pairs.push(KeyPair::linear("head", "heads.head"));
        KeyMap::Modules(pairs)
    }

    /// The model itself without autodiff.
    fn for_inference(&self) -> Eval<VisionTransformer> {
        Eval(self.valid())
    }
}

super::contract::family_config!(
    VisionTransformerConfig,
    VisionTransformer,
    "vit",
    "a ViT",
    VisionTransformer
);

impl VisionTransformerConfig {
    /// The architecture and its shape, for messages.
    fn describe_shape(&self) -> String {
        format!(
            "{}: {} layers, width {}, patch {}, image {}, {} classes",
            self.arch_name().unwrap_or("vit(custom)"),
            self.num_layers,
            self.hidden_dim,
            self.patch_size,
            self.image_size,
            self.num_classes
        )
    }
}
