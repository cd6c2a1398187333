import Foundation
import BLAS

/// Winograd F(4×4, 3×3) for 3×3 stride-1 convolutions.
///
/// Each 6×6 input tile `d` becomes `V = Bᵀ d B`, each filter `g` becomes `U = G g Gᵀ` (once, at
/// load), and the 36 element-wise products summed over input channels are 36 sgemms
/// `M[ξ] = U[ξ] · V[ξ]` (`[out, in] · [in, tiles]`). The output tile is `Aᵀ M A`: 4×4 outputs for
/// 36 multiplies per channel pair instead of 144. Tiles are processed in cache-sized blocks, one
/// block per thread at a time, each block's 36 sgemms single-threaded.
enum Winograd {
    /// `[36, out, in]` transformed filters.
    static func transformWeights(_ w: Tensor) -> Tensor {
        let o = w.shape[0], i = w.shape[1]
        let u = Tensor.zeros([36, o, i])
        for oc in 0..<o {
            for ic in 0..<i {
                let g = w.data + (oc * i + ic) * 9
                // t = G g  (6×3)
                var t = [Double](repeating: 0, count: 18)
                for c in 0..<3 {
                    let g0 = Double(g[c]), g1 = Double(g[3 + c]), g2 = Double(g[6 + c])
                    let col = gTimes(g0, g1, g2)
                    for r in 0..<6 { t[r * 3 + c] = col[r] }
                }
                // U = t Gᵀ  (6×6)
                for r in 0..<6 {
                    let row = gTimes(t[r * 3], t[r * 3 + 1], t[r * 3 + 2])
                    for c in 0..<6 { u.data[((r * 6 + c) * o + oc) * i + ic] = Float(row[c]) }
                }
            }
        }
        return u
    }

    private static func gTimes(_ g0: Double, _ g1: Double, _ g2: Double) -> [Double] {
        [g0 / 4,
         -(g0 + g1 + g2) / 6,
         -(g0 - g1 + g2) / 6,
         g0 / 24 + g1 / 12 + g2 / 6,
         g0 / 24 - g1 / 12 + g2 / 6,
         g2]
    }

    /// Smallest output (in 4×4 tiles) computed with Winograd; smaller maps use im2col.
    /// `DUBFARM_WINOGRAD_MIN_TILES` overrides (for tuning).
    /// 16: a 16×16 map (the `small` decoder's coarsest level) runs 36 products of 16 tiles
    /// each, which OpenBLAS still takes at ~95 GFLOP/s per core; Winograd there beat im2col by
    /// 2.5 ms a frame at 2 threads. Below that, one im2col sgemm.
    static let minTiles: Int = {
        if let v = ProcessInfo.processInfo.environment["DUBFARM_WINOGRAD_MIN_TILES"], let n = Int(v), n > 0 { return n }
        return 16
    }()

    /// Scratch budget per block (transformed input + products); `DUBFARM_WINOGRAD_KB` overrides.
    static let blockBytes: Int = {
        if let v = ProcessInfo.processInfo.environment["DUBFARM_WINOGRAD_KB"], let kb = Int(v), kb > 0 { return kb * 1024 }
        return 1536 * 1024
    }()

    /// Blocks per thread at least, when a convolution is split over threads (claimed on demand,
    /// so a core slowed by another process does not hold up the rest); `DUBFARM_WINOGRAD_ROUNDS`
    /// overrides (for tuning).
    static let minRounds: Int = {
        if let v = ProcessInfo.processInfo.environment["DUBFARM_WINOGRAD_ROUNDS"], let n = Int(v), n > 0 { return n }
        return 2
    }()

    /// Tile rows per block so that the block's transformed input and products fit in ~L2.
    static func blockRows(inC: Int, outC: Int, tilesPerRow: Int) -> Int {
        let bytesPerTile = 36 * 4 * (inC + outC)
        let tiles = blockBytes / bytesPerTile
        return max(1, min(tiles, 2048) / tilesPerRow)
    }

    /// Tiles per block below which a multi-threaded convolution switches from blocks to whole-map
    /// phases (``convolve(_:input:upsample2x:weightT:bias:padding:residual:out:split:_:)``);
    /// `DUBFARM_WINOGRAD_THIN` overrides (for tuning).
    static let thinBlockTiles: Int = {
        if let v = ProcessInfo.processInfo.environment["DUBFARM_WINOGRAD_THIN"], let n = Int(v), n >= 0 { return n }
        return 32
    }()

    /// How a multi-threaded convolution splits its work (see ``convolve(_:input:upsample2x:weightT:bias:padding:residual:out:split:_:)``).
    enum Split: Sendable { case blocks, wholeMap }

    /// Largest transformed input + products (bytes) for whole-map phases; bigger maps stay in blocks.
    static let wholeMapBytes = 8 << 20

    /// Transforms are separable and done a tile row at a time on 8-wide SIMD vectors
    /// (``KernelSet``: `winogradInput`, `winogradOutput`): input rows are first split by column
    /// phase (`x mod 4`), so the horizontal 6-point transforms of all tiles of a row read six
    /// contiguous arrays; outputs are computed per phase and interleaved back into the row.
    /// Scratch rows are padded to whole vectors (and the sgemm leading dimension by 8), so
    /// vector tails never need masking.
    ///
    /// With `upsample2x` the input is read as its nearest 2× upsampling (`x` is the
    /// low-resolution map; pixel `(y, x)` of the virtual input is `(y / 2, x / 2)` of `x`).
    /// With `input`, each value is read as `act(x · scale[c] + shift[c])` (a GroupNorm + SiLU
    /// fused in: the block's source rows of a channel are normalised once into a small buffer,
    /// and the normalised map is never written). With `residual` (`[out, Ho, Wo]`) it is added
    /// to the output as the tiles are written.
    ///
    /// Two ways to split the work over threads:
    /// - **blocks** (large maps): tile rows are cut into cache-sized blocks that threads claim
    ///   whole (transform, 36 single-threaded sgemms, output), one hand-off per convolution.
    /// - **whole map** (small maps, where blocks per thread would hold fewer than
    ///   ``thinBlockTiles`` tiles): the input transform split by channels, then the 36 sgemms
    ///   over all tiles claimed one at a time, then the output transform split by channels.
    ///   Three hand-offs, but each sgemm keeps its full width: a 16×16 map cut into per-thread
    ///   blocks gives 4-tile sgemms that spend their time packing the filters.
    static func convolve(_ x: Tensor, input: ChannelAffine? = nil, upsample2x: Bool = false, weightT: Tensor, bias: Tensor?, padding p: Int,
                         residual: UnsafeMutablePointer<Float>? = nil, out: Tensor, split: Split? = nil, _ ctx: ComputeContext) {
        let cin = x.shape[0]
        let cout = out.shape[0], oh = out.shape[1], ow = out.shape[2]
        let th = (oh + 3) / 4, tw = (ow + 3) / 4
        var rowsPerBlock = min(th, blockRows(inC: cin, outC: cout, tilesPerRow: tw))
        var blocks = (th + rowsPerBlock - 1) / rowsPerBlock
        if ctx.threads > 1 {
            if blocks > 1 {
                // at least two blocks per thread, claimed on demand
                let rounds = max(minRounds, (blocks + ctx.threads - 1) / ctx.threads)
                rowsPerBlock = (th + rounds * ctx.threads - 1) / (rounds * ctx.threads)
                blocks = (th + rowsPerBlock - 1) / rowsPerBlock
            }
            // one block for the whole map would leave the other threads idle
            let wholeMapSize = 36 * 4 * (cin + cout) * (th * tw + 8)
            let whole = split.map { $0 == .wholeMap }
                ?? ((blocks == 1 || rowsPerBlock * tw < thinBlockTiles) && wholeMapSize <= wholeMapBytes)
            if whole {
                convolveWholeMap(x, input: input, upsample2x: upsample2x, weightT: weightT, bias: bias, padding: p,
                                 residual: residual, out: out, ctx)
                return
            }
        }
        convolveBlocks(x, input: input, upsample2x: upsample2x, weightT: weightT, bias: bias, padding: p,
                       residual: residual, out: out, rowsPerBlock: rowsPerBlock, ctx)
    }

    /// Blocks of `rowsPerBlock` tile rows, each claimed whole by one thread.
    private static func convolveBlocks(_ x: Tensor, input: ChannelAffine?, upsample2x: Bool, weightT: Tensor, bias: Tensor?, padding p: Int,
                                       residual: UnsafeMutablePointer<Float>?, out: Tensor, rowsPerBlock: Int, _ ctx: ComputeContext) {
        let f = upsample2x ? 2 : 1
        let cin = x.shape[0], srcH = x.shape[1], srcW = x.shape[2], h = srcH * f, w = srcW * f
        let up = upsample2x
        let rd = residual.map { UnsafePointer($0) }
        let cout = out.shape[0], oh = out.shape[1], ow = out.shape[2]
        let th = (oh + 3) / 4, tw = (ow + 3) / 4
        let blocks = (th + rowsPerBlock - 1) / rowsPerBlock
        let ntS = rowsPerBlock * tw + 8     // leading dimension of V and M rows
        let workers = min(ctx.threads, blocks)
        let ph = (tw + 1 + 7) & ~7          // phase array length, whole vectors
        let twV = (tw + 7) & ~7             // tiles per row rounded to whole vectors
        let normSize = input == nil ? 0 : (4 * rowsPerBlock + 6) * srcW
        let vSize = 36 * cin * ntS, mSize = 36 * cout * ntS, tmpSize = 48 * ph + normSize + 8
        let per = (vSize + mSize + tmpSize + 15) & ~15
        let scratch = ctx.workspace.allocate(workers * per)
        let xd = UnsafePointer(x.data), od = out.data, ud = weightT.data
        let bd = bias.map { UnsafePointer($0.data) }
        let scale = input.map { UnsafePointer($0.scale) }, shift = input.map { UnsafePointer($0.shift) }
        let silu = input?.activation == .silu
        let k = ctx.kernels
        ctx.claim(blocks, workers: workers) { wk, blk in
            let v = scratch + wk * per
            let m = v + vSize
            let tmp = m + mSize
            let ty0 = blk * rowsPerBlock, ty1 = min(th, ty0 + rowsPerBlock)
            let nt = (ty1 - ty0) * tw
            k.winogradInput(xd, cin, cin, srcH, srcW, h, w, p, up, scale, shift, silu, ty0, ty1, tw, ph, twV, ntS, v, tmp)
            // 36 products
            for xi in 0..<36 {
                if workers == 1 {
                    ctx.gemm(m: cout, n: nt, k: cin, a: ud + xi * cout * cin, lda: cin,
                             b: v + xi * cin * ntS, ldb: ntS, beta: 0, c: m + xi * cout * ntS, ldc: ntS)
                } else {
                    BLAS.sgemm(m: cout, n: nt, k: cin, a: ud + xi * cout * cin, lda: cin,
                               b: v + xi * cin * ntS, ldb: ntS, beta: 0, c: m + xi * cout * ntS, ldc: ntS)
                }
            }
            k.winogradOutput(m, cout, cout, bd, rd, od, oh, ow, ty0, ty1, tw, ph, twV, ntS, tmp)
        }
    }

    /// The whole map at once in three phases: input transform by channel slices, the 36 sgemms
    /// over all tiles, output transform by channel slices.
    private static func convolveWholeMap(_ x: Tensor, input: ChannelAffine?, upsample2x: Bool, weightT: Tensor, bias: Tensor?, padding p: Int,
                                         residual: UnsafeMutablePointer<Float>?, out: Tensor, _ ctx: ComputeContext) {
        let f = upsample2x ? 2 : 1
        let cin = x.shape[0], srcH = x.shape[1], srcW = x.shape[2], h = srcH * f, w = srcW * f
        let up = upsample2x
        let cout = out.shape[0], oh = out.shape[1], ow = out.shape[2]
        let th = (oh + 3) / 4, tw = (ow + 3) / 4
        let nt = th * tw, ntS = nt + 8
        let ph = (tw + 1 + 7) & ~7, twV = (tw + 7) & ~7
        let threads = ctx.threads
        let normSize = input == nil ? 0 : (4 * th + 6) * srcW
        let tmpSize = (48 * ph + normSize + 8 + 15) & ~15
        let v = ctx.workspace.allocate(36 * cin * ntS), m = ctx.workspace.allocate(36 * cout * ntS)
        let tmp = ctx.workspace.allocate(threads * tmpSize)
        let xd = UnsafePointer(x.data), od = out.data, ud = weightT.data
        let bd = bias.map { UnsafePointer($0.data) }
        let scale = input.map { UnsafePointer($0.scale) }, shift = input.map { UnsafePointer($0.shift) }
        let silu = input?.activation == .silu
        let k = ctx.kernels
        let srcPlane = srcH * srcW, outPlane = oh * ow
        // channel slices: a few per thread, claimed on demand
        func slices(_ channels: Int) -> Int { min(channels, 4 * threads) }
        let inSlices = slices(cin)
        ctx.claim(inSlices, workers: threads) { wk, i in
            let c0 = cin * i / inSlices, c1 = cin * (i + 1) / inSlices
            k.winogradInput(xd + c0 * srcPlane, c1 - c0, cin, srcH, srcW, h, w, p, up,
                            scale.map { $0 + c0 }, shift.map { $0 + c0 }, silu,
                            0, th, tw, ph, twV, ntS, v + c0 * ntS, tmp + wk * tmpSize)
        }
        ctx.claim(36, workers: threads) { _, xi in
            BLAS.sgemm(m: cout, n: nt, k: cin, a: ud + xi * cout * cin, lda: cin,
                       b: v + xi * cin * ntS, ldb: ntS, beta: 0, c: m + xi * cout * ntS, ldc: ntS)
        }
        let outSlices = slices(cout)
        ctx.claim(outSlices, workers: threads) { wk, i in
            let c0 = cout * i / outSlices, c1 = cout * (i + 1) / outSlices
            k.winogradOutput(m + c0 * ntS, c1 - c0, cout, bd.map { $0 + c0 }, residual.map { UnsafePointer($0 + c0 * outPlane) },
                             od + c0 * outPlane, oh, ow, 0, th, tw, ph, twV, ntS, tmp + wk * tmpSize)
        }
    }
}
