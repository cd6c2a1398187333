import Engine

/// VQGAN / UNet residual block: `x + conv2(silu(gn2(conv1(silu(gn1(x))))))`, with a 1×1
/// `nin_shortcut` on the skip path when the channel count changes.
struct ResBlock {
    let norm1: GroupNorm, conv1: Conv2D, norm2: GroupNorm, conv2: Conv2D
    let shortcut: Conv2D?

    init(_ p: Parameters, _ prefix: String, _ cin: Int, _ cout: Int, groups: Int) {
        norm1 = p.groupNorm(prefix + ".norm1", cin, groups: groups)
        conv1 = p.conv(prefix + ".conv1", cin, cout, k: 3, padding: 1)
        norm2 = p.groupNorm(prefix + ".norm2", cout, groups: groups)
        conv2 = p.conv(prefix + ".conv2", cout, cout, k: 3, padding: 1)
        shortcut = cin == cout ? nil : p.conv(prefix + ".nin_shortcut", cin, cout, k: 1)
    }

    func callAsFunction(_ x: Tensor, _ ctx: ComputeContext) -> Tensor {
        ctx.workspace.scoped {
            let skip = shortcut.map { $0(x, ctx) } ?? x
            // the skip connection is added as conv2 writes its output
            if ctx.fuseNormalization {
                // each GroupNorm + SiLU is applied by the convolution as it reads its input
                let h = conv1(x, input: norm1.affine(x, activation: .silu, ctx), upsample2x: false, residual: nil, ctx)
                return conv2(h, input: norm2.affine(h, activation: .silu, ctx), upsample2x: false, residual: skip, ctx)
            }
            return conv2(norm2(conv1(norm1(x, activation: .silu, ctx), ctx), activation: .silu, ctx),
                         upsample2x: false, residual: skip, ctx)
        }
    }
}

/// VQGAN mid-block self-attention over the spatial positions, with 1×1-convolution projections
/// `q`, `k`, `v`, `proj_out` (taming-transformers names) and a residual.
struct SpatialSelfAttention {
    let norm: GroupNorm
    let q: Linear, k: Linear, v: Linear, proj: Linear
    let heads: Int

    init(_ p: Parameters, _ prefix: String, _ c: Int, groups: Int, heads: Int) {
        norm = p.groupNorm(prefix + ".norm", c, groups: groups)
        func conv1x1(_ n: String) -> Linear {
            Linear(weight: p.tensor(prefix + "." + n + ".weight", [c, c, 1, 1]), bias: p.tensor(prefix + "." + n + ".bias", [c]))
        }
        q = conv1x1("q"); k = conv1x1("k"); v = conv1x1("v"); proj = conv1x1("proj_out")
        self.heads = heads
    }

    func callAsFunction(_ x: Tensor, _ ctx: ComputeContext) -> Tensor {
        ctx.workspace.scoped {
            let c = x.shape[0], n = x.count / c
            let tokens = Shape.transpose(norm(x, ctx), rows: c, cols: n, ctx)
            let a = Attention.scaledDotProduct(q: q(tokens, ctx), k: k(tokens, ctx), v: v(tokens, ctx), heads: heads, ctx)
            let o = Shape.transpose(proj(a, ctx), rows: n, cols: c, ctx)
            Shape.addInPlace(o, x)
            return o.reshaped(x.shape)
        }
    }
}

/// UNet cross-attention from a feature map to a token sequence (the audio): GroupNorm, then
/// multi-head attention with the positions as queries, residual.
struct CrossAttentionBlock {
    let norm: GroupNorm
    let attn: MultiHeadAttention

    init(_ p: Parameters, _ prefix: String, _ c: Int, contextDim: Int, groups: Int, heads: Int) {
        norm = p.groupNorm(prefix + ".norm", c, groups: groups)
        attn = p.attention(prefix + ".attn", dim: c, contextDim: contextDim, heads: heads)
    }

    func callAsFunction(_ x: Tensor, context: Tensor, _ ctx: ComputeContext) -> Tensor {
        ctx.workspace.scoped {
            let c = x.shape[0], n = x.count / c
            let tokens = Shape.transpose(norm(x, ctx), rows: c, cols: n, ctx)
            let o = Shape.transpose(attn(tokens, context: context, ctx), rows: n, cols: c, ctx)
            Shape.addInPlace(o, x)
            return o.reshaped(x.shape)
        }
    }
}

/// Transformer feed-forward: `fc2(gelu(fc1(x)))`.
struct FeedForward {
    let fc1: Linear, fc2: Linear
    init(_ p: Parameters, _ prefix: String, _ d: Int, ratio: Int) {
        fc1 = p.linear(prefix + ".fc1", d, d * ratio)
        fc2 = p.linear(prefix + ".fc2", d * ratio, d)
    }
    func callAsFunction(_ x: Tensor, _ ctx: ComputeContext) -> Tensor {
        let h = fc1(x, ctx)
        Activation.gelu(h, ctx)
        return fc2(h, ctx)
    }
}
