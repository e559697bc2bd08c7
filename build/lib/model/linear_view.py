"""`LinearView`: SqueezeBertForEmotions in channel-last layout with every 1x1 `Conv1d` as a matrix product.

SqueezeBERT computes its projections as kernel-1 convolutions on [batch, channels, sequence] tensors. The same
function on [batch, sequence, channels] tensors is a `Linear` per convolution (groups = 1), or one batched
`MatMul` over the groups (groups > 1), with no transposes between layers. That is the form that exports to
`MatMul` in ONNX and that int8 dynamic quantization (ONNX Runtime's and torch's) speeds up.

It is also the faster way to train the same network on a CPU: a kernel-1 `Conv1d` with its layout transposes
makes a training step 1.24x slower than the matrix product (`benchmarks/training_step.py`). With
`share_weights=True` the view reads the convolutions' own parameters (no copies), so gradients land on the
SqueezeBERT weights that are saved and served.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional

from model.network import SqueezeBertForEmotions, masked_mean


def channel_last(conv: nn.Conv1d, share_weights: bool = False) -> nn.Module:
    """A kernel-1 Conv1d as the equivalent module on [batch, sequence, channels] input.

    The weights are copied (for export: plain `[out, in]` initializers), or shared with `conv` (for training).
    """
    if conv.kernel_size != (1,) or conv.stride != (1,) or conv.padding != (0,) or conv.dilation != (1,):
        raise ValueError(f"only 1x1 convolutions have a linear view, got {conv}")
    if share_weights:
        return SharedConvLinear(conv)
    if conv.groups > 1:
        return GroupedLinear(conv)
    linear = nn.Linear(conv.in_channels, conv.out_channels, bias=conv.bias is not None)
    with torch.no_grad():
        linear.weight.copy_(conv.weight[:, :, 0])
        if conv.bias is not None:
            linear.bias.copy_(conv.bias)
    return linear


class GroupedLinear(nn.Module):
    """A grouped 1x1 Conv1d as one batched MatMul: [batch, groups, sequence, in/g] x [groups, in/g, out/g]."""

    def __init__(self, conv: nn.Conv1d) -> None:
        super().__init__()
        self.groups = conv.groups
        out_channels, in_per_group, _ = conv.weight.shape
        per_group = conv.weight.detach()[:, :, 0].reshape(self.groups, out_channels // self.groups, in_per_group)
        self.weight = nn.Parameter(per_group.transpose(1, 2).contiguous(), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grouped = x.reshape(x.shape[0], x.shape[1], self.groups, -1).transpose(1, 2)
        out = torch.matmul(grouped, self.weight).transpose(1, 2).flatten(2)
        return out if self.bias is None else out + self.bias


class SharedConvLinear(nn.Module):
    """A 1x1 Conv1d computed channel-last from the convolution's own parameters, so gradients flow to them."""

    def __init__(self, conv: nn.Conv1d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias, groups = self.conv.weight[:, :, 0], self.conv.bias, self.conv.groups
        if groups == 1:
            return functional.linear(x, weight, bias)
        per_group = weight.reshape(groups, weight.shape[0] // groups, -1).transpose(1, 2)
        grouped = x.reshape(x.shape[0], x.shape[1], groups, -1).transpose(1, 2)
        out = torch.matmul(grouped, per_group).transpose(1, 2).flatten(2)
        return out if bias is None else out + bias


def layer_norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """`norm` over the last axis (SqueezeBertLayerNorm itself permutes to normalise axis 1)."""
    return functional.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


class LinearLayer(nn.Module):
    """One SqueezeBertModule (attention, post-attention, intermediate, output) in channel-last layout.

    The dropouts are the layer's own modules at the same places, so in train mode this trains like the layer.
    """

    def __init__(self, layer: nn.Module, share_weights: bool = False) -> None:
        super().__init__()
        attention = layer.attention
        self.heads = attention.num_attention_heads
        self.head_size = attention.attention_head_size
        self.query = channel_last(attention.query, share_weights)
        self.key = channel_last(attention.key, share_weights)
        self.value = channel_last(attention.value, share_weights)
        self.attention_dropout = attention.dropout
        self.post_attention = channel_last(layer.post_attention.conv1d, share_weights)
        self.post_attention_dropout = layer.post_attention.dropout
        self.post_attention_norm = layer.post_attention.layernorm
        self.intermediate = channel_last(layer.intermediate.conv1d, share_weights)
        self.activation = layer.intermediate.act
        self.output = channel_last(layer.output.conv1d, share_weights)
        self.output_dropout = layer.output.dropout
        self.output_norm = layer.output.layernorm

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, sequence, channels] -> [batch, heads, sequence, head_size]."""
        return x.reshape(x.shape[0], x.shape[1], self.heads, self.head_size).transpose(1, 2)

    def forward(self, hidden: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        query, value = self.split_heads(self.query(hidden)), self.split_heads(self.value(hidden))
        key = self.split_heads(self.key(hidden)).transpose(2, 3)
        attention = torch.matmul(query, key) / math.sqrt(self.head_size) + additive_mask
        probabilities = self.attention_dropout(attention.softmax(dim=-1))
        context = torch.matmul(probabilities, value).transpose(1, 2).flatten(2)
        post = layer_norm(self.post_attention_dropout(self.post_attention(context)) + hidden, self.post_attention_norm)
        intermediate = self.activation(self.intermediate(post))
        return layer_norm(self.output_dropout(self.output(intermediate)) + post, self.output_norm)


class LinearView(nn.Module):
    """`network` as the same function in channel-last layout: token ids and mask in, one logit per label out.

    The embeddings, layer norms, dropouts and head are the network's own modules. The projection weights are
    copies, or with `share_weights` the network's own parameters. Starts in eval mode (no dropout); in train
    mode it drops out where the network would.
    """

    def __init__(self, network: SqueezeBertForEmotions, share_weights: bool = False) -> None:
        super().__init__()
        transformer = network.transformer
        self.embeddings = transformer.embeddings
        self.layers = nn.ModuleList(LinearLayer(layer, share_weights) for layer in transformer.encoder.layers)
        self.dropout = network.dropout
        self.classifier = network.classifier
        self.eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.embeddings(input_ids=input_ids)
        # Padding keys get the most negative float added before the softmax, as transformers does.
        additive_mask = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
        for layer in self.layers:
            hidden = layer(hidden, additive_mask)
        return self.classifier(self.dropout(masked_mean(hidden, attention_mask)))


class SigmoidScores(nn.Module):
    """A logits module's sigmoid scores: the ONNX graphs return what the classifier serves."""

    def __init__(self, logits: nn.Module) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(input_ids, attention_mask))
