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
    static let minTiles = 36

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

    /// Transforms are separable and done a tile row at a time on 8-wide SIMD vectors: input
    /// rows are first split by column phase (`x mod 4`), so the horizontal 6-point transforms of
    /// all tiles of a row read six contiguous arrays; outputs are computed per phase and
    /// interleaved back into the row. Scratch rows are padded to whole vectors (and the sgemm
    /// leading dimension by 8), so vector tails never need masking.
    ///
    /// With `upsample2x` the input is read as its nearest 2× upsampling (`x` is the
    /// low-resolution map; pixel `(y, x)` of the virtual input is `(y / 2, x / 2)` of `x`).
    /// With `residual` (`[out, Ho, Wo]`) it is added to the output as the tiles are written.
    static func convolve(_ x: Tensor, upsample2x: Bool = false, weightT: Tensor, bias: Tensor?, padding p: Int,
                         residual: UnsafeMutablePointer<Float>? = nil, out: Tensor, _ ctx: ComputeContext) {
        let f = upsample2x ? 2 : 1
        let cin = x.shape[0], h = x.shape[1] * f, w = x.shape[2] * f
        let srcW = x.shape[2], srcPlane = x.shape[1] * x.shape[2]
        let up = upsample2x
        let rd = residual
        let cout = out.shape[0], oh = out.shape[1], ow = out.shape[2]
        let th = (oh + 3) / 4, tw = (ow + 3) / 4
        var rowsPerBlock = min(th, blockRows(inC: cin, outC: cout, tilesPerRow: tw))
        var blocks = (th + rowsPerBlock - 1) / rowsPerBlock
        if ctx.threads > 1 && blocks > 1 {
            // at least two blocks per thread, claimed on demand
            let rounds = max(minRounds, (blocks + ctx.threads - 1) / ctx.threads)
            rowsPerBlock = (th + rounds * ctx.threads - 1) / (rounds * ctx.threads)
            blocks = (th + rowsPerBlock - 1) / rowsPerBlock
        }
        let ntS = rowsPerBlock * tw + 8     // leading dimension of V and M rows
        let workers = min(ctx.threads, blocks)
        let ph = (tw + 1 + 7) & ~7          // phase array length, whole vectors
        let twV = (tw + 7) & ~7             // tiles per row rounded to whole vectors
        let vSize = 36 * cin * ntS, mSize = 36 * cout * ntS, tmpSize = 24 * ph + 24 * ph + 16 * ph + 8
        let per = (vSize + mSize + tmpSize + 15) & ~15
        let scratch = ctx.workspace.allocate(workers * per)
        let xd = x.data, od = out.data, ud = weightT.data
        let bd = bias?.data
        typealias V8 = SIMD8<Float>
        @inline(__always) func ld(_ q: UnsafeMutablePointer<Float>) -> V8 { UnsafeRawPointer(q).loadUnaligned(as: V8.self) }
        @inline(__always) func st(_ q: UnsafeMutablePointer<Float>, _ v: V8) { UnsafeMutableRawPointer(q).storeBytes(of: v, as: V8.self) }
        let counter = WorkCounter()
        let run: (Int) -> Void = { wk in
            let v = scratch + wk * per
            let m = v + vSize
            let rows = m + mSize          // 6 input rows × 4 phases × ph
            let vert = rows + 24 * ph     // 6 vertical results × 4 phases × ph
            let outp = vert + 24 * ph     // 16 outputs × ph
            while true {
                let blk = counter.next()
                if blk >= blocks { break }
                let ty0 = blk * rowsPerBlock, ty1 = min(th, ty0 + rowsPerBlock)
                let nt = (ty1 - ty0) * tw
                // input transform
                for c in 0..<cin {
                    let plane = xd + c * srcPlane
                    for ty in ty0..<ty1 {
                        let y0 = ty * 4 - p
                        // rows split by phase: rows[(k * 4 + mm) * ph + t] = in[y0 + k][4t + mm - p]
                        for k in 0..<6 {
                            let dst = rows + k * 4 * ph
                            let yy = y0 + k
                            if yy < 0 || yy >= h {
                                dst.initialize(repeating: 0, count: 4 * ph)
                                continue
                            }
                            let src = plane + (up ? yy >> 1 : yy) * srcW
                            for mm in 0..<4 {
                                let d = dst + mm * ph
                                // t with 0 <= 4t + mm - p < w
                                let lo = max(0, (p - mm + 3) / 4), lim = w - 1 - mm + p
                                let hi = lim < 0 ? lo : min(ph, max(lo, lim / 4 + 1))
                                var t = 0
                                while t < lo { d[t] = 0; t += 1 }
                                if up {
                                    // (4t + mm - p) / 2 = 2t + ⌊(mm - p) / 2⌋
                                    let s0 = src + ((mm - p) >> 1)
                                    while t < hi { d[t] = s0[2 * t]; t += 1 }
                                } else {
                                    let s0 = src + (mm - p)
                                    while t < hi { d[t] = s0[4 * t]; t += 1 }
                                }
                                while t < ph { d[t] = 0; t += 1 }
                            }
                        }
                        // vertical Bᵀ on all phases at once
                        let n = 4 * ph
                        var i = 0
                        while i < n {
                            let d0 = ld(rows + i), d1 = ld(rows + n + i), d2 = ld(rows + 2 * n + i)
                            let d3 = ld(rows + 3 * n + i), d4 = ld(rows + 4 * n + i), d5 = ld(rows + 5 * n + i)
                            st(vert + i, 4 * d0 - 5 * d2 + d4)
                            st(vert + n + i, d3 + d4 - 4 * (d1 + d2))
                            st(vert + 2 * n + i, 4 * (d1 - d2) - d3 + d4)
                            st(vert + 3 * n + i, 2 * (d3 - d1) - d2 + d4)
                            st(vert + 4 * n + i, 2 * (d1 - d3) - d2 + d4)
                            st(vert + 5 * n + i, 4 * d1 - 5 * d3 + d5)
                            i += 8
                        }
                        // horizontal B: tile t reads phases 0..3 at t and phases 0, 1 at t + 1
                        let tbase = (ty - ty0) * tw
                        let s = cin * ntS
                        for r in 0..<6 {
                            let a0 = vert + r * n, a1 = a0 + ph, a2 = a0 + 2 * ph, a3 = a0 + 3 * ph
                            let dst = v + (r * 6 * cin + c) * ntS + tbase
                            var t = 0
                            while t < twV {
                                let d0 = ld(a0 + t), d1 = ld(a1 + t), d2 = ld(a2 + t), d3 = ld(a3 + t)
                                let d4 = ld(a0 + t + 1), d5 = ld(a1 + t + 1)
                                st(dst + t, 4 * d0 - 5 * d2 + d4)
                                st(dst + s + t, d3 + d4 - 4 * (d1 + d2))
                                st(dst + 2 * s + t, 4 * (d1 - d2) - d3 + d4)
                                st(dst + 3 * s + t, 2 * (d3 - d1) - d2 + d4)
                                st(dst + 4 * s + t, 2 * (d1 - d3) - d2 + d4)
                                st(dst + 5 * s + t, 4 * d1 - 5 * d3 + d5)
                                t += 8
                            }
                        }
                    }
                }
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
                // output transform
                for c in 0..<cout {
                    let bv = V8(repeating: bd?[c] ?? 0)
                    let plane = od + c * oh * ow
                    let s = cout * ntS
                    for ty in ty0..<ty1 {
                        let mrow = m + c * ntS + (ty - ty0) * tw
                        // horizontal Aᵀ over the 6 columns of each row: hz[(r * 4 + j) * ph + t]
                        for r in 0..<6 {
                            let m0 = mrow + r * 6 * s
                            let h0 = vert + r * 4 * ph
                            var t = 0
                            while t < twV {
                                let a = ld(m0 + t), b = ld(m0 + s + t), cc = ld(m0 + 2 * s + t)
                                let d = ld(m0 + 3 * s + t), e = ld(m0 + 4 * s + t), f = ld(m0 + 5 * s + t)
                                let bp = b + cc, bm = b - cc, dp = d + e, dm = d - e
                                st(h0 + t, a + bp + dp)
                                st(h0 + ph + t, bm + 2 * dm)
                                st(h0 + 2 * ph + t, bp + 4 * dp)
                                st(h0 + 3 * ph + t, bm + 8 * dm + f)
                                t += 8
                            }
                        }
                        // vertical Aᵀ over the 6 rows: outp[(i * 4 + j) * ph + t]
                        for j in 0..<4 {
                            let a0 = vert + j * ph
                            var t = 0
                            while t < twV {
                                let a = ld(a0 + t), b = ld(a0 + 4 * ph + t), cc = ld(a0 + 8 * ph + t)
                                let d = ld(a0 + 12 * ph + t), e = ld(a0 + 16 * ph + t), f = ld(a0 + 20 * ph + t)
                                let bp = b + cc, bm = b - cc, dp = d + e, dm = d - e
                                st(outp + j * ph + t, a + bp + dp + bv)
                                st(outp + (4 + j) * ph + t, bm + 2 * dm + bv)
                                st(outp + (8 + j) * ph + t, bp + 4 * dp + bv)
                                st(outp + (12 + j) * ph + t, bm + 8 * dm + f + bv)
                                t += 8
                            }
                        }
                        // interleave: output row 4ty + i, column 4t + j  <-  outp[(i * 4 + j) * ph + t]
                        let full = ow / 4
                        for i in 0..<min(4, oh - ty * 4) {
                            let row = plane + (ty * 4 + i) * ow
                            let o = outp + i * 4 * ph
                            if let rd {
                                let res = rd + c * oh * ow + (ty * 4 + i) * ow
                                for t in 0..<full {
                                    row[4 * t] = o[t] + res[4 * t]; row[4 * t + 1] = o[ph + t] + res[4 * t + 1]
                                    row[4 * t + 2] = o[2 * ph + t] + res[4 * t + 2]; row[4 * t + 3] = o[3 * ph + t] + res[4 * t + 3]
                                }
                                for xx in (full * 4)..<ow { row[xx] = o[(xx % 4) * ph + xx / 4] + res[xx] }
                            } else {
                                for t in 0..<full {
                                    row[4 * t] = o[t]; row[4 * t + 1] = o[ph + t]
                                    row[4 * t + 2] = o[2 * ph + t]; row[4 * t + 3] = o[3 * ph + t]
                                }
                                for xx in (full * 4)..<ow { row[xx] = o[(xx % 4) * ph + xx / 4] }
                            }
                        }
                    }
                }
            }
        }
        ctx.onWorkers(workers, run)
    }
}

