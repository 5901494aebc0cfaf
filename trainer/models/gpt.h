// A decoder-only transformer (GPT-2's layout) over token ids [batch, positions]:
//   tok_emb Embedding(vocab_size, dim) + pos_emb Embedding(context, dim) -> drop
//   -> blocks.i: x + attn(ln1(x)), then x + mlp(ln2(x))   (pre-LayerNorm)
//        attn: qkv Linear(dim, 3 dim) -> causal scaled-dot-product attention over `heads`
//              heads (LibTorch's fused kernel, attention dropout) -> proj Linear -> dropout
//        mlp:  fc Linear(dim, 4 dim) -> GELU -> proj Linear(4 dim, dim) -> dropout
//   -> ln_f LayerNorm -> logits = h tok_emb.weight^T  (output weights tied to the embedding)
// returning [batch, positions, vocab_size]. Weights start as GPT-2's: N(0, 0.02), the
// residual projections N(0, 0.02 / sqrt(2 layers)), biases 0. Parameter names match the
// Python class of the same structure (tests/e2e/model_twins.py), so state dicts interchange.
#pragma once

#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include "trainer/spec/parts.h"

namespace forge::train {

class CausalSelfAttentionImpl : public torch::nn::Module {
 public:
  CausalSelfAttentionImpl(int64_t dim, int64_t heads, double dropout);
  at::Tensor forward(const at::Tensor& x);

  torch::nn::Linear qkv{nullptr}, proj{nullptr};
  torch::nn::Dropout drop{nullptr};
  int64_t heads;
  double dropout;
};
TORCH_MODULE(CausalSelfAttention);

class GptMlpImpl : public torch::nn::Module {
 public:
  GptMlpImpl(int64_t dim, double dropout);
  at::Tensor forward(const at::Tensor& x);

  torch::nn::Linear fc{nullptr}, proj{nullptr};
  torch::nn::Dropout drop{nullptr};
};
TORCH_MODULE(GptMlp);

class GptBlockImpl : public torch::nn::Module {
 public:
  GptBlockImpl(int64_t dim, int64_t heads, double dropout);
  at::Tensor forward(const at::Tensor& x);

  torch::nn::LayerNorm ln1{nullptr}, ln2{nullptr};
  CausalSelfAttention attn{nullptr};
  GptMlp mlp{nullptr};
};
TORCH_MODULE(GptBlock);

class Gpt : public torch::nn::Module {
 public:
  Gpt(int64_t vocab, int64_t context, int64_t layers, int64_t heads, int64_t dim, double dropout);
  // tokens: int64 [batch, positions] with positions <= context.
  at::Tensor forward(const at::Tensor& tokens);

  torch::nn::Embedding tok_emb{nullptr}, pos_emb{nullptr};
  torch::nn::Dropout drop{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::LayerNorm ln_f{nullptr};
  int64_t context;
};

// model.name: gpt, with vocab_size, context, layers, heads, dim, dropout.
ModelSpec gptModel();

}  // namespace forge::train
