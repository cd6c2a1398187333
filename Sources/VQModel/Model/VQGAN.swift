import Engine

/// The VQGAN encoder, shared by both face halves: `conv_in`, per level ResNet blocks and a
/// stride-2 downsampling convolution, a mid block (ResNet, self-attention, ResNet), GroupNorm +
/// SiLU, `conv_out`, then the 1×1 `quant_conv` to the codebook dimension.
struct Encoder {
    let convIn: Conv2D
    let levels: [(blocks: [ResBlock], down: Conv2D?)]
    let mid1: ResBlock, midAttn: SpatialSelfAttention, mid2: ResBlock
    let normOut: GroupNorm, convOut: Conv2D, quantConv: Conv2D

    init(_ p: Parameters, _ c: ModelConfig) {
        let g = c.groups
        convIn = p.conv("encoder.conv_in", 3, c.channels, k: 3, padding: 1)
        var cin = c.channels
        var lv: [(blocks: [ResBlock], down: Conv2D?)] = []
        for (i, m) in c.channelMult.enumerated() {
            var blocks: [ResBlock] = []
            for j in 0..<c.numResBlocks {
                blocks.append(ResBlock(p, "encoder.down.\(i).block.\(j)", cin, c.channels * m, groups: g))
                cin = c.channels * m
            }
            let down = i == c.channelMult.count - 1 ? nil : p.conv("encoder.down.\(i).downsample.conv", cin, cin, k: 3, stride: 2, padding: 1)
            lv.append((blocks, down))
        }
        levels = lv
        mid1 = ResBlock(p, "encoder.mid.block_1", cin, cin, groups: g)
        midAttn = SpatialSelfAttention(p, "encoder.mid.attn_1", cin, groups: g, heads: c.vqAttentionHeads)
        mid2 = ResBlock(p, "encoder.mid.block_2", cin, cin, groups: g)
        normOut = p.groupNorm("encoder.norm_out", cin, groups: g)
        convOut = p.conv("encoder.conv_out", cin, c.zChannels, k: 3, padding: 1)
        quantConv = p.conv("quant_conv", c.zChannels, c.embedDim, k: 1)
    }

    func callAsFunction(_ x: Tensor, _ ctx: ComputeContext) -> Tensor {
        var h = convIn(x, ctx)
        for level in levels {
            for b in level.blocks { h = b(h, ctx) }
            if let d = level.down { h = d(h, ctx) }
        }
        h = mid2(midAttn(mid1(h, ctx), ctx), ctx)
        if ctx.fuseNormalization {
            return quantConv(convOut(h, input: normOut.affine(h, activation: .silu, ctx), upsample2x: false, residual: nil, ctx), ctx)
        }
        return quantConv(convOut(normOut(h, activation: .silu, ctx), ctx), ctx)
    }
}

/// The VQGAN decoder over the re-joined token grid: `post_quant_conv`, `conv_in`, mid block,
/// per level (coarsest first) ResNet blocks and nearest-2× upsampling + 3×3 convolution,
/// GroupNorm + SiLU, `conv_out` to RGB.
struct Decoder {
    let postQuantConv: Conv2D, convIn: Conv2D
    let mid1: ResBlock, midAttn: SpatialSelfAttention, mid2: ResBlock
    /// Coarsest level first (execution order).
    let levels: [(blocks: [ResBlock], up: Conv2D?)]
    let normOut: GroupNorm, convOut: Conv2D

    init(_ p: Parameters, _ c: ModelConfig) {
        let g = c.groups
        var cin = c.channels * c.channelMult.last!
        postQuantConv = p.conv("post_quant_conv", c.embedDim, c.zChannels, k: 1)
        convIn = p.conv("decoder.conv_in", c.zChannels, cin, k: 3, padding: 1)
        mid1 = ResBlock(p, "decoder.mid.block_1", cin, cin, groups: g)
        midAttn = SpatialSelfAttention(p, "decoder.mid.attn_1", cin, groups: g, heads: c.vqAttentionHeads)
        mid2 = ResBlock(p, "decoder.mid.block_2", cin, cin, groups: g)
        var lv: [(blocks: [ResBlock], up: Conv2D?)] = []
        for i in stride(from: c.channelMult.count - 1, through: 0, by: -1) {
            var blocks: [ResBlock] = []
            for j in 0..<c.numResBlocks {
                blocks.append(ResBlock(p, "decoder.up.\(i).block.\(j)", cin, c.channels * c.channelMult[i], groups: g))
                cin = c.channels * c.channelMult[i]
            }
            let up = i == 0 ? nil : p.conv("decoder.up.\(i).upsample.conv", cin, cin, k: 3, padding: 1)
            lv.append((blocks, up))
        }
        levels = lv
        normOut = p.groupNorm("decoder.norm_out", cin, groups: g)
        convOut = p.conv("decoder.conv_out", cin, 3, k: 3, padding: 1)
    }

    func callAsFunction(_ z: Tensor, _ ctx: ComputeContext) -> Tensor {
        var h = convIn(postQuantConv(z, ctx), ctx)
        h = mid2(midAttn(mid1(h, ctx), ctx), ctx)
        for level in levels {
            for b in level.blocks { h = b(h, ctx) }
            if let u = level.up { h = u(h, upsample2x: true, residual: nil, ctx) }
        }
        if ctx.fuseNormalization {
            return convOut(h, input: normOut.affine(h, activation: .silu, ctx), upsample2x: false, residual: nil, ctx)
        }
        return convOut(normOut(h, activation: .silu, ctx), ctx)
    }
}
