import BLAS
import Foundation

/// A 2-D convolution over a `[C, H, W]` feature map (batch 1), PyTorch `Conv2d` semantics:
/// weight `[out, in, kh, kw]`, optional bias `[out]`, symmetric zero padding, square stride.
///
/// Algorithms, chosen once at construction:
/// - 1×1, stride 1, no padding: one sgemm `W[out, in] · X[in, H·W]` straight on the input.
/// - 3×3, stride 1, output of at least ``Winograd/minTiles`` 4×4 tiles: Winograd F(4×4, 3×3)
///   (36 sgemms on transformed tiles, filters transformed once at construction).
/// - anything else: im2col + sgemm by blocks of output rows (each block's columns sized for L2,
///   built and multiplied by one thread; blocks claimed by the threads on demand).
public struct Conv2D: @unchecked Sendable {
    /// How the convolution is computed.
    public enum Algorithm: Sendable { case auto, im2col, winograd }

    public let outChannels: Int
    public let inChannels: Int
    public let kernelH: Int
    public let kernelW: Int
    public let stride: Int
    public let padding: Int
    /// `[out, in, kh, kw]`.
    public let weight: Tensor
    /// `[out]` or nil.
    public let bias: Tensor?
    let winogradWeight: Tensor?
    let forceWinograd: Bool

    /// A convolution with PyTorch's weight layout.
    public init(weight: Tensor, bias: Tensor?, stride: Int = 1, padding: Int = 0, algorithm: Algorithm = .auto) {
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
        case .auto: use = eligible
        case .winograd: precondition(eligible, "winograd needs 3x3 stride 1"); use = true
        case .im2col: use = false
        }
        winogradWeight = use ? Winograd.transformWeights(weight) : nil
        forceWinograd = algorithm == .winograd
    }

    /// Output spatial size for an input of `h × w`.
    public func outputSize(h: Int, w: Int) -> (h: Int, w: Int) {
        ((h + 2 * padding - kernelH) / stride + 1, (w + 2 * padding - kernelW) / stride + 1)
    }

    /// FLOPs of a direct convolution at this input size (2 per multiply-add).
    public func flops(h: Int, w: Int) -> Double {
        let o = outputSize(h: h, w: w)
        return 2 * Double(outChannels * inChannels * kernelH * kernelW) * Double(o.h * o.w)
    }

    /// Convolves `x` (`[in, H, W]`) into a new workspace tensor `[out, Ho, Wo]`.
    public func callAsFunction(_ x: Tensor, _ ctx: ComputeContext) -> Tensor {
        callAsFunction(x, input: nil, upsample2x: false, residual: nil, ctx)
    }

    /// `conv(up(x)) + residual` (see ``callAsFunction(_:input:upsample2x:residual:_:)``).
    public func callAsFunction(_ x: Tensor, upsample2x: Bool, residual: Tensor?, _ ctx: ComputeContext) -> Tensor {
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
    public func callAsFunction(_ x: Tensor, input: ChannelAffine?, upsample2x: Bool, residual: Tensor?, _ ctx: ComputeContext) -> Tensor {
        ctx.timed(profileLabel(x, input: input, upsample2x: upsample2x, residual: residual)) {
            compute(x, input: input, upsample2x: upsample2x, residual: residual, ctx)
        }
    }

    /// Whether an output of `oh × ow` is computed with Winograd.
    func usesWinograd(oh: Int, ow: Int) -> Bool {
        // Winograd on tiny maps reads 4× the filter bytes for a handful of tiles and runs 36 thin
        // sgemms; one im2col sgemm is faster there.
        winogradWeight != nil && (((oh + 3) / 4) * ((ow + 3) / 4) >= Winograd.minTiles || forceWinograd)
    }

    private func profileLabel(_ x: Tensor, input: ChannelAffine?, upsample2x: Bool, residual: Tensor?) -> String {
        let f = upsample2x ? 2 : 1
        let o = outputSize(h: x.shape[1] * f, w: x.shape[2] * f)
        let alg = usesWinograd(oh: o.h, ow: o.w) ? "winograd"
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
                              residual: residual?.data, out: out, ctx)
            return out
        }
        let normalized = input.map { $0.apply(x, ctx) } ?? x
        let source = upsample2x ? Shape.upsampleNearest2x(normalized, ctx) : normalized
        let n = o.h * o.w
        let od = out.data, bd = bias.map { UnsafePointer($0.data) }, rd = residual.map { UnsafePointer($0.data) }
        let beta: Float = bd != nil || rd != nil ? 1 : 0
        let kdim = inChannels * kernelH * kernelW
        if kernelH == 1 && kernelW == 1 && stride == 1 && padding == 0 {
            if beta != 0 {
                ctx.parallelFor(outChannels, minChunk: max(1, 16_384 / max(1, n))) { c in
                    Self.startOutput(od, bias: bd, residual: rd, channel: c, n: n, from: 0, count: n)
                }
            }
            ctx.gemm(m: outChannels, n: n, k: kdim, a: weight.data, lda: kdim,
                       b: source.data, ldb: n, beta: beta, c: od, ldc: n)
            return out
        }
        // im2col by blocks of output rows: each block's columns are built into a buffer that
        // stays in L2 and multiplied at once by the same thread, blocks claimed on demand (one
        // hand-off per convolution instead of one for im2col and one for the product)
        let rowFloats = kdim * o.w
        var rowsPerBlock = max(1, min(o.h, max(1, Self.im2colBlockBytes) / 4 / max(1, rowFloats)))
        var blocks = (o.h + rowsPerBlock - 1) / rowsPerBlock
        if ctx.threads > 1 && blocks < 2 * ctx.threads && o.h >= 2 * ctx.threads {
            rowsPerBlock = (o.h + 2 * ctx.threads - 1) / (2 * ctx.threads)
            blocks = (o.h + rowsPerBlock - 1) / rowsPerBlock
        }
        let workers = min(ctx.threads, blocks)
        if (workers == 1 && ctx.threads > 1) || Self.im2colBlockBytes == 0 {
            // too few rows to share out (or blocks turned off): one im2col, the product split
            // over the threads
            if beta != 0 {
                ctx.parallelFor(outChannels, minChunk: max(1, 16_384 / max(1, n))) { c in
                    Self.startOutput(od, bias: bd, residual: rd, channel: c, n: n, from: 0, count: n)
                }
            }
            let cols = ctx.workspace.allocate(kdim * n)
            ctx.parallelFor(kdim, minChunk: 8) { row in
                im2col(source.data, h: h, w: w, ow: o.w, rows: 0..<o.h, kernelRow: row, into: cols + row * n)
            }
            ctx.gemm(m: outChannels, n: n, k: kdim, a: weight.data, lda: kdim, b: cols, ldb: n, beta: beta, c: od, ldc: n)
            return out
        }
        let per = (kdim * rowsPerBlock * o.w + 15) & ~15
        let buffers = ctx.workspace.allocate(workers * per)
        let counter = WorkCounter()
        let xd = source.data, wd = weight.data, cout = outChannels, ow = o.w, oh = o.h
        ctx.onWorkers(workers) { wk in
            let cols = buffers + wk * per
            while true {
                let blk = counter.next()
                if blk >= blocks { break }
                let y0 = blk * rowsPerBlock, y1 = min(oh, y0 + rowsPerBlock), nb = (y1 - y0) * ow
                if beta != 0 {
                    for c in 0..<cout { Self.startOutput(od, bias: bd, residual: rd, channel: c, n: n, from: y0 * ow, count: nb) }
                }
                for row in 0..<kdim {
                    im2col(xd, h: h, w: w, ow: ow, rows: y0..<y1, kernelRow: row, into: cols + row * nb)
                }
                BLAS.sgemm(m: cout, n: nb, k: kdim, a: wd, lda: kdim, b: cols, ldb: nb, beta: beta, c: od + y0 * ow, ldc: n)
            }
        }
        return out
    }

    /// Bytes of im2col columns per block of output rows; `DUBFARM_IM2COL_KB` overrides (for
    /// tuning; 0: no blocks, one im2col of the whole map and a split product).
    static let im2colBlockBytes: Int = {
        if let v = ProcessInfo.processInfo.environment["DUBFARM_IM2COL_KB"], let kb = Int(v), kb >= 0 { return kb * 1024 }
        return 512 * 1024
    }()

    /// Output channel `channel`, elements `from ..< from + count` of its `n`, set to the bias
    /// (+ the residual): the product is then accumulated onto it.
    @inline(__always)
    private static func startOutput(_ od: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?, residual: UnsafePointer<Float>?,
                                    channel c: Int, n: Int, from: Int, count: Int) {
        let dst = od + c * n + from
        if let r = residual { dst.update(from: r + c * n + from, count: count) } else { dst.initialize(repeating: 0, count: count) }
        if let b = bias {
            let bv = b[c]
            for i in 0..<count { dst[i] += bv }
        }
    }

    /// Row `kernelRow` (input channel, ky, kx) of the im2col matrix, output rows `rows`, into
    /// `dst` (`rows.count × ow` floats).
    private func im2col(_ x: UnsafeMutablePointer<Float>, h: Int, w: Int, ow: Int, rows: Range<Int>, kernelRow row: Int,
                        into dst: UnsafeMutablePointer<Float>) {
        let kh = kernelH, kw = kernelW, s = stride, p = padding
        do {
            let ci = row / (kh * kw), r = row % (kh * kw), ky = r / kw, kx = r % kw
            let plane = x + ci * h * w
            for oy in rows {
                let iy = oy * s - p + ky
                let d = dst + (oy - rows.lowerBound) * ow
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
