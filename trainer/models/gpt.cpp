#include "trainer/models/gpt.h"

#include <torch/torch.h>

#include <cmath>

#include "core/error.h"
#include "core/strings.h"

namespace forge::train {

namespace F = torch::nn::functional;

CausalSelfAttentionImpl::CausalSelfAttentionImpl(int64_t dim, int64_t h, double p) : heads(h), dropout(p) {
  qkv = register_module("qkv", torch::nn::Linear(dim, 3 * dim));
  proj = register_module("proj", torch::nn::Linear(dim, dim));
  drop = register_module("drop", torch::nn::Dropout(p));
}

at::Tensor CausalSelfAttentionImpl::forward(const at::Tensor& x) {
  const int64_t b = x.size(0), t = x.size(1), d = x.size(2);
  // [b, t, 3d] -> three [b, heads, t, d / heads]
  auto parts = qkv(x).view({b, t, 3, heads, d / heads}).permute({2, 0, 3, 1, 4}).unbind(0);
  at::Tensor y = at::scaled_dot_product_attention(parts[0], parts[1], parts[2], /*attn_mask=*/{},
                                                  is_training() ? dropout : 0.0, /*is_causal=*/true);
  return drop(proj(y.transpose(1, 2).reshape({b, t, d})));
}

GptMlpImpl::GptMlpImpl(int64_t dim, double p) {
  fc = register_module("fc", torch::nn::Linear(dim, 4 * dim));
  proj = register_module("proj", torch::nn::Linear(4 * dim, dim));
  drop = register_module("drop", torch::nn::Dropout(p));
}

at::Tensor GptMlpImpl::forward(const at::Tensor& x) { return drop(proj(F::gelu(fc(x)))); }

GptBlockImpl::GptBlockImpl(int64_t dim, int64_t heads, double p) {
  ln1 = register_module("ln1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
  attn = register_module("attn", CausalSelfAttention(dim, heads, p));
  ln2 = register_module("ln2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
  mlp = register_module("mlp", GptMlp(dim, p));
}

at::Tensor GptBlockImpl::forward(const at::Tensor& x) {
  at::Tensor h = x + attn(ln1(x));
  return h + mlp(ln2(h));
}

Gpt::Gpt(int64_t vocab, int64_t ctx, int64_t layers, int64_t heads, int64_t dim, double p) : context(ctx) {
  tok_emb = register_module("tok_emb", torch::nn::Embedding(vocab, dim));
  pos_emb = register_module("pos_emb", torch::nn::Embedding(ctx, dim));
  drop = register_module("drop", torch::nn::Dropout(p));
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < layers; ++i) blocks->push_back(GptBlock(dim, heads, p));
  ln_f = register_module("ln_f", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
  torch::NoGradGuard noGrad;
  for (auto& item : named_parameters()) {
    const std::string& name = item.key();
    at::Tensor& param = item.value();
    if (name.size() >= 4 && name.compare(name.size() - 4, 4, "bias") == 0) {
      param.zero_();
    } else if (param.dim() == 2) {  // Linear and Embedding weights
      const bool residual = name.find("proj.weight") != std::string::npos;
      param.normal_(0.0, residual ? 0.02 / std::sqrt(2.0 * static_cast<double>(layers)) : 0.02);
    }  // LayerNorm weights stay 1
  }
}

at::Tensor Gpt::forward(const at::Tensor& tokens) {
  const int64_t t = tokens.size(1);
  TORCH_CHECK(t <= context, "a sequence of ", t, " tokens is longer than model.context = ", context);
  at::Tensor positions = at::arange(t, tokens.options().dtype(at::kLong));
  at::Tensor h = drop(tok_emb(tokens) + pos_emb(positions));
  for (const auto& block : *blocks) h = block->as<GptBlockImpl>()->forward(h);
  return F::linear(ln_f(h), tok_emb->weight);
}

ModelSpec gptModel() {
  ModelSpec s;
  s.name = "gpt";
  s.help = "decoder-only transformer: token + position embeddings, pre-LayerNorm blocks of causal self-attention "
           "and a GELU MLP, output weights tied to the embedding; [batch, positions] ids -> [batch, positions, "
           "vocab_size] logits";
  s.options.add<int64_t>("vocab_size", 256, "token ids the model embeds: [0, vocab_size) (256 for bytes)", atLeast(2))
      .add<int64_t>("context", 128, "positions per sequence (a stored sequence holds context + 1 tokens)", atLeast(1))
      .add<int64_t>("layers", 4, "transformer blocks", atLeast(1))
      .add<int64_t>("heads", 4, "attention heads per block (dim must be a multiple)", atLeast(1))
      .add<int64_t>("dim", 128, "width of the residual stream", atLeast(1))
      .add<double>("dropout", 0.1, "dropout on embeddings, attention weights, and each block's two outputs",
                   inRange(0, 1));
  s.make = [](const Options& o) {
    const int64_t dim = o.get<int64_t>("dim"), heads = o.get<int64_t>("heads");
    if (dim % heads != 0) {
      throw ConfigError(concat("model.dim ", dim, " is not a multiple of model.heads ", heads,
                               ": each head takes dim / heads values"));
    }
    return wrapModel(std::make_shared<Gpt>(o.get<int64_t>("vocab_size"), o.get<int64_t>("context"),
                                           o.get<int64_t>("layers"), heads, dim, o.get<double>("dropout")));
  };
  s.checkInput = [](const std::vector<int64_t>& shape, const Options& o) {
    const int64_t context = o.get<int64_t>("context");
    if (shape.size() == 1 && shape[0] == context) return std::string();
    if (shape.size() != 1) {
      return concat("samples have shape ", dimsText(shape), " but the gpt model takes sequences of token ids");
    }
    return concat("sequences give the model ", shape[0], " positions (with next-token targets a stored sequence "
                  "holds one more) but model.context is ", context, ": the sequences are ",
                  shape[0] < context ? "shorter" : "longer", " than the context (forge data text --context ", context,
                  " makes them to fit, or set model.context: ", shape[0], ")");
  };
  s.vocabulary = [](const Options& o) { return o.get<int64_t>("vocab_size"); };
  return s;
}

}  // namespace forge::train
