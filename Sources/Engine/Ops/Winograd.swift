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

    /// Tile rows per block so that the block's transformed input and products fit in ~L2.
    static func blockRows(inC: Int, outC: Int, tilesPerRow: Int) -> Int {
        let bytesPerTile = 36 * 4 * (inC + outC)
        let tiles = (1536 * 1024) / bytesPerTile
        return max(1, min(tiles, 2048) / tilesPerRow)
    }

    /// Transforms are separable and done a tile row at a time with loops over contiguous
    /// arrays, which the compiler vectorises: input rows are first split by column phase
    /// (`x mod 4`), so the horizontal 6-point transforms of all tiles of a row read six
    /// contiguous arrays; outputs are computed per phase and interleaved back into the row.
    static func convolve(_ x: Tensor, weightT: Tensor, bias: Tensor?, padding p: Int, out: Tensor, _ ctx: ComputeContext) {
        let cin = x.shape[0], h = x.shape[1], w = x.shape[2]
        let cout = out.shape[0], oh = out.shape[1], ow = out.shape[2]
        let th = (oh + 3) / 4, tw = (ow + 3) / 4
        let rowsPerBlock = min(th, blockRows(inC: cin, outC: cout, tilesPerRow: tw))
        let blocks = (th + rowsPerBlock - 1) / rowsPerBlock
        let ntMax = rowsPerBlock * tw
        let workers = min(ctx.threads, blocks)
        let ph = tw + 1 // phase array length
        let vSize = 36 * cin * ntMax, mSize = 36 * cout * ntMax, tmpSize = 6 * 4 * ph + 6 * 4 * ph + 16 * ph
        let per = vSize + mSize + tmpSize
        let scratch = ctx.workspace.allocate(workers * per)
        let xd = x.data, od = out.data, ud = weightT.data
        let bd = bias?.data
        let single = workers > 1
        if single { BLAS.setThreads(1) }
        defer { if single { BLAS.setThreads(ctx.threads) } }
        let run: (Int) -> Void = { wk in
            let v = scratch + wk * per
            let m = v + vSize
            let rows = m + mSize          // 6 input rows × 4 phases × ph
            let vert = rows + 24 * ph     // 6 vertical results × 4 phases × ph
            let outp = vert + 24 * ph     // 16 outputs × ph
            var blk = wk
            while blk < blocks {
                let ty0 = blk * rowsPerBlock, ty1 = min(th, ty0 + rowsPerBlock)
                let nt = (ty1 - ty0) * tw
                // input transform
                for c in 0..<cin {
                    let plane = xd + c * h * w
                    for ty in ty0..<ty1 {
                        let y0 = ty * 4 - p
                        // rows split by phase: rows[(k * 4 + m) * ph + t] = in[y0 + k][4t + m - p]
                        for k in 0..<6 {
                            let dst = rows + k * 4 * ph
                            let yy = y0 + k
                            if yy < 0 || yy >= h {
                                dst.initialize(repeating: 0, count: 4 * ph)
                                continue
                            }
                            let src = plane + yy * w
                            for t in 0..<ph {
                                for mm in 0..<4 {
                                    let xx = 4 * t + mm - p
                                    dst[mm * ph + t] = (xx >= 0 && xx < w) ? src[xx] : 0
                                }
                            }
                        }
                        // vertical Bᵀ: vert[r] = Σ_k B[k][r] rows[k], on all phases at once
                        let n = 4 * ph
                        let r0 = rows, r1 = rows + n, r2 = rows + 2 * n, r3 = rows + 3 * n, r4 = rows + 4 * n, r5 = rows + 5 * n
                        let q0 = vert, q1 = vert + n, q2 = vert + 2 * n, q3 = vert + 3 * n, q4 = vert + 4 * n, q5 = vert + 5 * n
                        for i in 0..<n {
                            let d0 = r0[i], d1 = r1[i], d2 = r2[i], d3 = r3[i], d4 = r4[i], d5 = r5[i]
                            q0[i] = 4 * d0 - 5 * d2 + d4
                            q1[i] = -4 * d1 - 4 * d2 + d3 + d4
                            q2[i] = 4 * d1 - 4 * d2 - d3 + d4
                            q3[i] = -2 * d1 - d2 + 2 * d3 + d4
                            q4[i] = 2 * d1 - d2 - 2 * d3 + d4
                            q5[i] = 4 * d1 - 5 * d3 + d5
                        }
                        // horizontal B: tile tx reads phases 0..3 at t = tx and phases 0, 1 at t = tx + 1
                        let tbase = (ty - ty0) * tw
                        for r in 0..<6 {
                            let a0 = vert + r * n, a1 = a0 + ph, a2 = a0 + 2 * ph, a3 = a0 + 3 * ph
                            let b0 = a0 + 1, b1 = a1 + 1
                            let dst = v + (r * 6 * cin + c) * nt + tbase
                            let s = cin * nt
                            let o0 = dst, o1 = dst + s, o2 = dst + 2 * s, o3 = dst + 3 * s, o4 = dst + 4 * s, o5 = dst + 5 * s
                            for t in 0..<tw {
                                let d0 = a0[t], d1 = a1[t], d2 = a2[t], d3 = a3[t], d4 = b0[t], d5 = b1[t]
                                o0[t] = 4 * d0 - 5 * d2 + d4
                                o1[t] = -4 * d1 - 4 * d2 + d3 + d4
                                o2[t] = 4 * d1 - 4 * d2 - d3 + d4
                                o3[t] = -2 * d1 - d2 + 2 * d3 + d4
                                o4[t] = 2 * d1 - d2 - 2 * d3 + d4
                                o5[t] = 4 * d1 - 5 * d3 + d5
                            }
                        }
                    }
                }
                // 36 products
                for xi in 0..<36 {
                    BLAS.sgemm(m: cout, n: nt, k: cin, a: ud + xi * cout * cin, lda: cin,
                               b: v + xi * cin * nt, ldb: nt, beta: 0, c: m + xi * cout * nt, ldc: nt)
                }
                // output transform
                for c in 0..<cout {
                    let bv = bd?[c] ?? 0
                    let plane = od + c * oh * ow
                    for ty in ty0..<ty1 {
                        let tbase = (ty - ty0) * tw
                        // horizontal Aᵀ over columns for each of the 6 rows, then vertical over rows
                        let s = cout * nt
                        let mrow = m + c * nt + tbase
                        let hz = vert // reuse: 6 rows × 4 outputs × ph
                        for r in 0..<6 {
                            let mm0 = mrow + (r * 6) * s, mm1 = mm0 + s, mm2 = mm0 + 2 * s, mm3 = mm0 + 3 * s, mm4 = mm0 + 4 * s, mm5 = mm0 + 5 * s
                            let h0 = hz + (r * 4) * ph, h1 = h0 + ph, h2 = h0 + 2 * ph, h3 = h0 + 3 * ph
                            for t in 0..<tw {
                                let a = mm0[t], b = mm1[t], cc = mm2[t], d = mm3[t], e = mm4[t], f = mm5[t]
                                h0[t] = a + b + cc + d + e
                                h1[t] = b - cc + 2 * d - 2 * e
                                h2[t] = b + cc + 4 * d + 4 * e
                                h3[t] = b - cc + 8 * d - 8 * e + f
                            }
                        }
                        for j in 0..<4 {
                            let a0 = hz + j * ph, a1 = a0 + 4 * ph, a2 = a0 + 8 * ph, a3 = a0 + 12 * ph, a4 = a0 + 16 * ph, a5 = a0 + 20 * ph
                            let o0 = outp + j * ph, o1 = o0 + 4 * ph, o2 = o0 + 8 * ph, o3 = o0 + 12 * ph
                            for t in 0..<tw {
                                let a = a0[t], b = a1[t], cc = a2[t], d = a3[t], e = a4[t], f = a5[t]
                                o0[t] = a + b + cc + d + e + bv
                                o1[t] = b - cc + 2 * d - 2 * e + bv
                                o2[t] = b + cc + 4 * d + 4 * e + bv
                                o3[t] = b - cc + 8 * d - 8 * e + f + bv
                            }
                        }
                        // interleave: output row 4ty + i, column 4t + j  <-  outp[(i * 4 + j) * ph + t]
                        for i in 0..<min(4, oh - ty * 4) {
                            let row = plane + (ty * 4 + i) * ow
                            let o = outp + i * 4 * ph
                            let full = ow / 4
                            for t in 0..<full {
                                row[4 * t] = o[t]; row[4 * t + 1] = o[ph + t]
                                row[4 * t + 2] = o[2 * ph + t]; row[4 * t + 3] = o[3 * ph + t]
                            }
                            for xx in (full * 4)..<ow { row[xx] = o[(xx % 4) * ph + xx / 4] }
                        }
                    }
                }
                blk += workers
            }
        }
        if workers == 1 { run(0) } else { ctx.parallelFor(workers) { run($0) } }
    }
}

