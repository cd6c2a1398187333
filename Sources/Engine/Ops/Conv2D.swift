import BLAS
import Foundation

/// A 2-D convolution over a `[C, H, W]` feature map (batch 1), PyTorch `Conv2d` semantics:
/// weight `[out, in, kh, kw]`, optional bias `[out]`, symmetric zero padding, square stride.
///
/// Algorithms, chosen once at construction:
/// - 1×1, stride 1, no padding: one sgemm `W[out, in] · X[in, H·W]` straight on the input.
/// - 3×3, stride 1, at most ``directMaxOutChannels`` output channels, input map within
///   ``directMaxInputBytes``: a direct vector loop (``KernelSet``: `conv3x3Direct`). For a
///   product 3 rows tall, Winograd's transforms cost more than the products they save; on a
///   map larger than the caches, though, the direct loop (which copies its rows, and multiplies
///   and adds without fused multiply-adds) loses to Winograd again (`paper`'s 64→3 at 320×320:
///   13.2 against 10.8 ms; `small`'s 32→3 at 128×128: 0.75 against 1.71 ms).
/// - 3×3, stride 1, output of at least ``Winograd/minTiles`` 4×4 tiles: Winograd F(4×4, 3×3)
///   (36 sgemms on transformed tiles, filters transformed once at construction).
/// - anything else: im2col into the workspace, then one sgemm.
package struct Conv2D: @unchecked Sendable {
    /// How the convolution is computed.
    package enum Algorithm: Sendable { case auto, im2col, winograd, direct }

    /// Most output channels for which a 3×3 stride-1 convolution runs the direct loop;
    /// `DUBFARM_DIRECT_MAX_OUT` overrides (0 turns the direct loop off; for tuning).
    package static let directMaxOutChannels: Int = {
        if let v = ProcessInfo.processInfo.environment["DUBFARM_DIRECT_MAX_OUT"], let n = Int(v), n >= 0 { return n }
        return 4
    }()

    package let outChannels: Int
    package let inChannels: Int
    package let kernelH: Int
    package let kernelW: Int
    package let stride: Int
    package let padding: Int
    /// `[out, in, kh, kw]`.
    package let weight: Tensor
    /// `[out]` or nil.
    package let bias: Tensor?
    let winogradWeight: Tensor?
    let forceWinograd: Bool
    let direct: Bool
    /// Largest input map (bytes) for the direct loop.
    package static let directMaxInputBytes = 4 << 20
    /// How a multi-threaded Winograd convolution splits its work (nil: chosen by map size;
    /// set by tests to run both ways on the same shapes).
    var winogradSplit: Winograd.Split?

    /// A convolution with PyTorch's weight layout.
    package init(weight: Tensor, bias: Tensor?, stride: Int = 1, padding: Int = 0, algorithm: Algorithm = .auto) {
        precondition(weight.shape.count == 4, "conv weight must be [out, in, kh, kw], got \(weight.shape)")
        self.weight = weight
        self.bias = bias
        self.outChannels = weight.shape[0]
        self.inChannels = weight.shape[1]
        self.kernelH = weight.shape[2]
        self.kernelW = weight.shape[3]
        self.stride = stride
        self.padding = padding
        let eligible = kernelH == 3 && kernelW == 3 && stride == 1
        let use: Bool
        switch algorithm {
        case .auto:
            direct = eligible && outChannels <= Self.directMaxOutChannels
            use = eligible
        case .winograd: precondition(eligible, "winograd needs 3x3 stride 1"); use = true; direct = false
        case .direct: precondition(eligible, "the direct loop needs 3x3 stride 1"); use = false; direct = true
        case .im2col: use = false; direct = false
        }
        winogradWeight = use ? Winograd.transformWeights(weight) : nil
        forceWinograd = algorithm == .winograd
    }

    /// Output spatial size for an input of `h × w`.
    package func outputSize(h: Int, w: Int) -> (h: Int, w: Int) {
        ((h + 2 * padding - kernelH) / stride + 1, (w + 2 * padding - kernelW) / stride + 1)
    }

    /// FLOPs of a direct convolution at this input size (2 per multiply-add).
    package func flops(h: Int, w: Int) -> Double {
        let o = outputSize(h: h, w: w)
        return 2 * Double(outChannels * inChannels * kernelH * kernelW) * Double(o.h * o.w)
    }

    /// Convolves `x` (`[in, H, W]`) into a new workspace tensor `[out, Ho, Wo]`.
    package func callAsFunction(_ x: Tensor, _ ctx: ComputeContext) -> Tensor {
        callAsFunction(x, input: nil, upsample2x: false, residual: nil, ctx)
    }

    /// `conv(up(x)) + residual` (see ``callAsFunction(_:input:upsample2x:residual:_:)``).
    package func callAsFunction(_ x: Tensor, upsample2x: Bool, residual: Tensor?, _ ctx: ComputeContext) -> Tensor {
        callAsFunction(x, input: nil, upsample2x: upsample2x, residual: residual, ctx)
    }

    /// `conv(up(input(x))) + residual` into a new workspace tensor, where `input` is a
    /// per-channel affine map and activation (a GroupNorm + SiLU, ``GroupNorm/affine(_:activation:_:)``;
    /// the identity when nil), `up` is nearest 2× upsampling when `upsample2x` is set (the
    /// identity otherwise) and `residual` has the output's shape.
    ///
    /// Fusing saves whole passes over the largest maps of the decoder: the Winograd input
    /// transform reads the raw, low-resolution map directly and normalises each source row
    /// once into a small buffer (neither the normalised nor the 4× larger upsampled map is
    /// written), and the residual is added while the output tiles are written back. The other
    /// algorithms write the normalised map first (the same values).
    package func callAsFunction(_ x: Tensor, input: ChannelAffine?, upsample2x: Bool, residual: Tensor?, _ ctx: ComputeContext) -> Tensor {
        ctx.timed(profileLabel(x, input: input, upsample2x: upsample2x, residual: residual)) {
            compute(x, input: input, upsample2x: upsample2x, residual: residual, ctx)
        }
    }

    /// Whether an output of `oh × ow` is computed with the direct loop.
    func usesDirect(oh: Int, ow: Int) -> Bool {
        direct && (winogradWeight == nil || inChannels * oh * ow * 4 <= Self.directMaxInputBytes)
    }

    /// Whether an output of `oh × ow` is computed with Winograd.
    func usesWinograd(oh: Int, ow: Int) -> Bool {
        if usesDirect(oh: oh, ow: ow) { return false }
        // Winograd on tiny maps reads 4× the filter bytes for a handful of tiles and runs 36 thin
        // sgemms; one im2col sgemm is faster there.
        return winogradWeight != nil && (((oh + 3) / 4) * ((ow + 3) / 4) >= Winograd.minTiles || forceWinograd)
    }

    private func profileLabel(_ x: Tensor, input: ChannelAffine?, upsample2x: Bool, residual: Tensor?) -> String {
        let f = upsample2x ? 2 : 1
        let o = outputSize(h: x.shape[1] * f, w: x.shape[2] * f)
        let alg = usesWinograd(oh: o.h, ow: o.w) ? "winograd" : usesDirect(oh: o.h, ow: o.w) ? "direct3x3"
            : kernelH == 1 && kernelW == 1 && stride == 1 && padding == 0 ? "direct" : "im2col"
        return "conv\(kernelH)x\(kernelW)/\(stride) \(inChannels)→\(outChannels) \(o.h)×\(o.w) \(alg)"
            + (input != nil ? " +norm" : "") + (upsample2x ? " +up" : "") + (residual != nil ? " +res" : "")
    }

    private func compute(_ x: Tensor, input: ChannelAffine?, upsample2x: Bool, residual: Tensor?, _ ctx: ComputeContext) -> Tensor {
        precondition(x.shape.count == 3 && x.shape[0] == inChannels, "conv: input \(x.shape), expected [\(inChannels), H, W]")
        precondition(input.map { $0.channels == inChannels } ?? true, "conv: input affine map of \(input?.channels ?? 0) channels, expected \(inChannels)")
        let f = upsample2x ? 2 : 1
        let h = x.shape[1] * f, w = x.shape[2] * f
        let o = outputSize(h: h, w: w)
        if let r = residual {
            precondition(r.shape == [outChannels, o.h, o.w], "conv: residual \(r.shape), expected [\(outChannels), \(o.h), \(o.w)]")
        }
        let out = ctx.workspace.tensor([outChannels, o.h, o.w])
        // im2col columns and Winograd tiles are released as soon as the output is written
        let scratch = ctx.workspace.mark()
        defer { ctx.workspace.rewind(to: scratch) }
        ctx.flops += flops(h: h, w: w)
        if let ww = winogradWeight, usesWinograd(oh: o.h, ow: o.w) {
            Winograd.convolve(x, input: input, upsample2x: upsample2x, weightT: ww, bias: bias, padding: padding,
                              residual: residual?.data, out: out, split: winogradSplit, ctx)
            return out
        }
        let normalized = input.map { $0.apply(x, ctx) } ?? x
        let source = upsample2x ? Shape.upsampleNearest2x(normalized, ctx) : normalized
        if usesDirect(oh: o.h, ow: o.w) {
            convolveDirect(source, h: h, w: w, oh: o.h, ow: o.w, residual: residual, out: out, ctx)
            return out
        }
        let n = o.h * o.w
        let beta: Float
        let od = out.data, bd = bias?.data, rd = residual?.data
        if bd != nil || rd != nil {
            // C starts as bias (+ residual); the product is accumulated onto it
            ctx.parallelFor(outChannels, minChunk: max(1, 16_384 / max(1, n))) { c in
                let dst = od + c * n
                if let r = rd { dst.update(from: r + c * n, count: n) } else { dst.initialize(repeating: 0, count: n) }
                if let b = bd {
                    let bv = b[c]
                    for i in 0..<n { dst[i] += bv }
                }
            }
            beta = 1
        } else {
            beta = 0
        }
        let kdim = inChannels * kernelH * kernelW
        if kernelH == 1 && kernelW == 1 && stride == 1 && padding == 0 {
            ctx.gemm(m: outChannels, n: n, k: kdim, a: weight.data, lda: kdim,
                       b: source.data, ldb: n, beta: beta, c: od, ldc: n)
            return out
        }
        let cols = ctx.workspace.allocate(kdim * n)
        im2col(source.data, c: inChannels, h: h, w: w, oh: o.h, ow: o.w, cols: cols, ctx)
        ctx.gemm(m: outChannels, n: n, k: kdim, a: weight.data, lda: kdim,
                   b: cols, ldb: n, beta: beta, c: od, ldc: n)
        return out
    }

    /// The direct loop, in bands of output rows claimed by the threads (each band's padded
    /// input rows stay in L2).
    private func convolveDirect(_ x: Tensor, h: Int, w: Int, oh: Int, ow: Int, residual: Tensor?, out: Tensor, _ ctx: ComputeContext) {
        let band = max(1, min(8, (oh + 4 * ctx.threads - 1) / (4 * ctx.threads)))
        let bands = (oh + band - 1) / band
        let workers = min(ctx.threads, bands)
        let per = (KernelSet.directScratch(channels: inChannels, rows: band, ow: ow, outChannels: outChannels) + 15) & ~15
        let scratch = ctx.workspace.allocate(workers * per)
        let xd = UnsafePointer(x.data), wd = UnsafePointer(weight.data), od = out.data
        let bd = bias.map { UnsafePointer($0.data) }, rd = residual.map { UnsafePointer($0.data) }
        let cin = inChannels, cout = outChannels, p = padding, k = ctx.kernels
        ctx.claim(bands, workers: workers) { wk, b in
            let y0 = b * band, y1 = min(oh, y0 + band)
            k.conv3x3Direct(xd, cin, h, w, p, wd, cout, bd, rd, od, y0, y1, scratch + wk * per)
        }
    }

    private func im2col(_ x: UnsafeMutablePointer<Float>, c: Int, h: Int, w: Int, oh: Int, ow: Int,
                        cols: UnsafeMutablePointer<Float>, _ ctx: ComputeContext) {
        let kh = kernelH, kw = kernelW, s = stride, p = padding
        ctx.parallelFor(c * kh * kw, minChunk: 8) { row in
            let ci = row / (kh * kw), r = row % (kh * kw), ky = r / kw, kx = r % kw
            let plane = x + ci * h * w
            let dst = cols + row * oh * ow
            for oy in 0..<oh {
                let iy = oy * s - p + ky
                let d = dst + oy * ow
                if iy < 0 || iy >= h {
                    d.initialize(repeating: 0, count: ow)
                    continue
                }
                let src = plane + iy * w
                if s == 1 {
                    // contiguous run with zero borders
                    var ox = 0
                    while ox < ow && ox - p + kx < 0 { d[ox] = 0; ox += 1 }
                    var end = ow
                    while end > ox && end - 1 - p + kx >= w { end -= 1; d[end] = 0 }
                    if end > ox { (d + ox).update(from: src + (ox - p + kx), count: end - ox) }
                } else {
                    for ox in 0..<ow {
                        let ix = ox * s - p + kx
                        d[ox] = (ix >= 0 && ix < w) ? src[ix] : 0
                    }
                }
            }
        }
    }
}
