import Engine

/// The face-swap transformer in VQ space.
///
/// Tokens of the target and source grids (`[E, G, G]`, row-major positions) are projected by
/// `in_proj` and given the learned positional embedding `pos_emb [G², d]` and an origin embedding
/// `type_emb [2, d]` (row 0 source, row 1 target). Each layer: target tokens cross-attend to
/// the source tokens (`x += attn(norm_q(x), norm_kv(s))`), then a GELU MLP
/// (`x += mlp(norm_mlp(x))`). `norm_out` and `out_proj` map back to the codebook dimension.
/// The source side depends on the source face only, so its keys and values are computed once
/// per job (``SwapSource``).
struct FaceSwap {
    struct Layer {
        let normQ: LayerNorm, normKV: LayerNorm, attn: MultiHeadAttention, normMLP: LayerNorm, mlp: FeedForward
    }
    let inProj: Linear, posEmb: Tensor, typeEmb: Tensor
    let layers: [Layer]
    let normOut: LayerNorm, outProj: Linear
    let dim: Int

    init(_ p: Parameters, _ c: ModelConfig) {
        let d = c.swapDim, n = c.gridSize * c.gridSize
        dim = d
        inProj = p.linear("swap.in_proj", c.embedDim, d)
        posEmb = p.tensor("swap.pos_emb", [n, d])
        typeEmb = p.tensor("swap.type_emb", [2, d])
        layers = (0..<c.swapLayers).map { l in
            let pre = "swap.layers.\(l)"
            return Layer(normQ: p.layerNorm(pre + ".norm_q", d), normKV: p.layerNorm(pre + ".norm_kv", d),
                         attn: p.attention(pre + ".attn", dim: d, contextDim: d, heads: c.swapHeads),
                         normMLP: p.layerNorm(pre + ".norm_mlp", d), mlp: FeedForward(p, pre + ".mlp", d, ratio: c.swapMlpRatio))
        }
        normOut = p.layerNorm("swap.norm_out", d)
        outProj = p.linear("swap.out_proj", d, c.embedDim)
    }

    private func embed(_ grid: Tensor, type: Int, _ ctx: ComputeContext) -> Tensor {
        let e = grid.shape[0], n = grid.count / e
        let x = inProj(Shape.transpose(grid, rows: e, cols: n, ctx), ctx)
        Shape.addInPlace(x, posEmb)
        Shape.addRows(x, typeEmb.data + type * dim)
        return x
    }

    /// Per-layer keys and values of the source tokens (owned, survive workspace resets).
    func prepare(source: Tensor, _ ctx: ComputeContext) -> SwapSource {
        let s = embed(source, type: 0, ctx)
        let kv = layers.map { layer -> (Tensor, Tensor) in
            let n = layer.normKV(s, ctx)
            return (layer.attn.k(n, ctx).copy(), layer.attn.v(n, ctx).copy())
        }
        return SwapSource(keysValues: kv)
    }

    func callAsFunction(target: Tensor, source: SwapSource, _ ctx: ComputeContext) -> Tensor {
        let e = target.shape[0], n = target.count / e
        var x = embed(target, type: 1, ctx)
        for (layer, kv) in zip(layers, source.keysValues) {
            let q = layer.attn.q(layer.normQ(x, ctx), ctx)
            let a = layer.attn.out(Attention.scaledDotProduct(q: q, k: kv.0, v: kv.1, heads: layer.attn.heads, ctx), ctx)
            Shape.addInPlace(a, x)
            x = a
            let m = layer.mlp(layer.normMLP(x, ctx), ctx)
            Shape.addInPlace(m, x)
            x = m
        }
        let y = outProj(normOut(x, ctx), ctx)
        return Shape.transpose(y, rows: n, cols: e, ctx).reshaped(target.shape)
    }
}

/// The source face, prepared once per job: per swap-layer keys and values.
package struct SwapSource: @unchecked Sendable {
    let keysValues: [(Tensor, Tensor)]
}

/// The audio encoder: a 16 × 80 log-mel window (one row per mel frame) becomes 16 tokens:
/// `in_proj` + `pos_emb`, pre-norm self-attention transformer layers, `norm_out`.
struct AudioEncoder {
    struct Layer { let norm1: LayerNorm, attn: MultiHeadAttention, norm2: LayerNorm, mlp: FeedForward }
    let inProj: Linear, posEmb: Tensor, layers: [Layer], normOut: LayerNorm

    init(_ p: Parameters, _ c: ModelConfig) {
        let d = c.audioDim
        inProj = p.linear("audio.in_proj", c.melBins, d)
        posEmb = p.tensor("audio.pos_emb", [c.melFrames, d])
        layers = (0..<c.audioLayers).map { l in
            let pre = "audio.layers.\(l)"
            return Layer(norm1: p.layerNorm(pre + ".norm1", d), attn: p.attention(pre + ".attn", dim: d, contextDim: d, heads: c.audioHeads),
                         norm2: p.layerNorm(pre + ".norm2", d), mlp: FeedForward(p, pre + ".mlp", d, ratio: c.audioMlpRatio))
        }
        normOut = p.layerNorm("audio.norm_out", d)
    }

    func callAsFunction(_ mel: Tensor, _ ctx: ComputeContext) -> Tensor {
        var x = inProj(mel, ctx)
        Shape.addInPlace(x, posEmb)
        for l in layers {
            let n = l.norm1(x, ctx)
            let a = l.attn(n, context: n, ctx)
            Shape.addInPlace(a, x); x = a
            let m = l.mlp(l.norm2(x, ctx), ctx)
            Shape.addInPlace(m, x); x = m
        }
        return normOut(x, ctx)
    }
}

/// The lip-sync UNet over the lower-half token grid.
///
/// Input: target and reference lower halves concatenated on channels (`2E`). `conv_in`; per
/// level a ResNet block, cross-attention to the audio tokens at the levels in
/// `unetAttentionLevels`, a stride-2 convolution except at the coarsest level; mid block
/// (ResNet, cross-attention, ResNet); per level coarsest first, the skip of that level is
/// concatenated, a ResNet block, cross-attention where configured, nearest-2× + 3×3 convolution
/// except at level 0; GroupNorm + SiLU, `conv_out` back to `E` channels.
struct LipSyncUNet {
    struct Level { let res: ResBlock; let attn: CrossAttentionBlock?; let resample: Conv2D? }
    let convIn: Conv2D
    let down: [Level]
    let mid1: ResBlock, midAttn: CrossAttentionBlock, mid2: ResBlock
    /// Coarsest first.
    let up: [Level]
    let normOut: GroupNorm, convOut: Conv2D
    /// Rows and columns of the target's lower-half grid zeroed before `conv_in` (``ModelConfig/lipsyncTargetMask``).
    let targetMask: (rows: Range<Int>, cols: Range<Int>)?

    init(_ p: Parameters, _ c: ModelConfig) {
        targetMask = c.lipsyncTargetMask.map { ($0[0]..<$0[1], $0[2]..<$0[3]) }
        let g = c.unetGroups, a = c.audioDim, heads = c.unetHeads
        let chans = c.unetChannelMult.map { c.unetChannels * $0 }
        let last = chans.count - 1
        convIn = p.conv("lipsync.conv_in", 2 * c.embedDim, chans[0], k: 3, padding: 1)
        var cin = chans[0]
        var dl: [Level] = []
        for (i, ch) in chans.enumerated() {
            let pre = "lipsync.down.\(i)"
            let res = ResBlock(p, pre + ".res", cin, ch, groups: g)
            cin = ch
            let attn = c.unetAttentionLevels.contains(i) ? CrossAttentionBlock(p, pre + ".xattn", ch, contextDim: a, groups: g, heads: heads) : nil
            let ds = i == last ? nil : p.conv(pre + ".downsample", ch, ch, k: 3, stride: 2, padding: 1)
            dl.append(Level(res: res, attn: attn, resample: ds))
        }
        down = dl
        mid1 = ResBlock(p, "lipsync.mid.res_1", cin, cin, groups: g)
        midAttn = CrossAttentionBlock(p, "lipsync.mid.xattn", cin, contextDim: a, groups: g, heads: heads)
        mid2 = ResBlock(p, "lipsync.mid.res_2", cin, cin, groups: g)
        var ul: [Level] = []
        for i in stride(from: last, through: 0, by: -1) {
            let pre = "lipsync.up.\(i)", ch = chans[i]
            let res = ResBlock(p, pre + ".res", cin + ch, ch, groups: g)
            cin = ch
            let attn = c.unetAttentionLevels.contains(i) ? CrossAttentionBlock(p, pre + ".xattn", ch, contextDim: a, groups: g, heads: heads) : nil
            let us = i == 0 ? nil : p.conv(pre + ".upsample", ch, ch, k: 3, padding: 1)
            ul.append(Level(res: res, attn: attn, resample: us))
        }
        up = ul
        normOut = p.groupNorm("lipsync.norm_out", cin, groups: g)
        convOut = p.conv("lipsync.conv_out", cin, c.embedDim, k: 3, padding: 1)
    }

    /// The target with its mouth tokens zeroed (a copy), or the target itself without a mask.
    func masked(_ target: Tensor, _ ctx: ComputeContext) -> Tensor {
        guard let m = targetMask else { return target }
        let t = ctx.workspace.tensor(target.shape)
        let e = target.shape[0], h = target.shape[1], w = target.shape[2]
        t.data.update(from: target.data, count: target.count)
        for ch in 0..<e {
            for r in m.rows { (t.data + (ch * h + r) * w + m.cols.lowerBound).update(repeating: 0, count: m.cols.count) }
        }
        return t
    }

    func callAsFunction(target: Tensor, reference: Tensor, audio: Tensor, _ ctx: ComputeContext) -> Tensor {
        var h = convIn(Shape.concat([masked(target, ctx), reference], ctx), ctx)
        var skips: [Tensor] = []
        for l in down {
            h = l.res(h, ctx)
            if let a = l.attn { h = a(h, context: audio, ctx) }
            skips.append(h)
            if let d = l.resample { h = d(h, ctx) }
        }
        h = mid2(midAttn(mid1(h, ctx), context: audio, ctx), ctx)
        for l in up {
            h = l.res(Shape.concat([h, skips.removeLast()], ctx), ctx)
            if let a = l.attn { h = a(h, context: audio, ctx) }
            if let u = l.resample { h = u(h, upsample2x: true, residual: nil, ctx) }
        }
        return convOut(normOut(h, activation: .silu, ctx), ctx)
    }
}
