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

    /// Tiles per block so that the block's transformed input and product fit in ~L2.
    static func blockTiles(inC: Int, outC: Int) -> Int {
        let bytesPerTile = 36 * 4 * (inC + outC)
        let b = (768 * 1024) / bytesPerTile
        return min(512, max(16, b & ~7))
    }

    static func convolve(_ x: Tensor, weightT: Tensor, bias: Tensor?, padding p: Int, out: Tensor, _ ctx: ComputeContext) {
        let cin = x.shape[0], h = x.shape[1], w = x.shape[2]
        let cout = out.shape[0], oh = out.shape[1], ow = out.shape[2]
        let th = (oh + 3) / 4, tw = (ow + 3) / 4
        let tiles = th * tw
        let tb = min(blockTiles(inC: cin, outC: cout), tiles)
        let blocks = (tiles + tb - 1) / tb
        let workers = min(ctx.threads, blocks)
        let vSize = 36 * cin * tb, mSize = 36 * cout * tb
        let scratch = ctx.workspace.allocate(workers * (vSize + mSize))
        let xd = x.data, od = out.data, ud = weightT.data
        let bd = bias?.data
        let single = workers > 1 || ctx.threads == 1
        if single && ctx.threads > 1 { BLAS.setThreads(1) }
        defer { if single && ctx.threads > 1 { BLAS.setThreads(ctx.threads) } }
        let run: (Int) -> Void = { wk in
            let v = scratch + wk * (vSize + mSize)
            let m = v + vSize
            var blk = wk
            while blk < blocks {
                let t0 = blk * tb
                let nt = min(tb, tiles - t0)
                // input transform
                for c in 0..<cin {
                    let plane = xd + c * h * w
                    for t in 0..<nt {
                        let tile = t0 + t
                        let ty = tile / tw, tx = tile % tw
                        let y0 = ty * 4 - p, x0 = tx * 4 - p
                        var dd = InlineTile()
                        if y0 >= 0 && x0 >= 0 && y0 + 6 <= h && x0 + 6 <= w {
                            for r in 0..<6 {
                                let s = plane + (y0 + r) * w + x0
                                dd.set(r, s[0], s[1], s[2], s[3], s[4], s[5])
                            }
                        } else {
                            for r in 0..<6 {
                                let yy = y0 + r
                                if yy < 0 || yy >= h { dd.set(r, 0, 0, 0, 0, 0, 0); continue }
                                let s = plane + yy * w
                                @inline(__always) func at(_ k: Int) -> Float {
                                    let xx = x0 + k
                                    return (xx >= 0 && xx < w) ? s[xx] : 0
                                }
                                dd.set(r, at(0), at(1), at(2), at(3), at(4), at(5))
                            }
                        }
                        dd.inputTransform(into: v + c * nt + t, stride: cin * nt)
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
                    for t in 0..<nt {
                        let tile = t0 + t
                        let ty = tile / tw, tx = tile % tw
                        InlineTile.outputTransform(from: m + c * nt + t, stride: cout * nt, bias: bv,
                                                   into: plane, oy: ty * 4, ox: tx * 4, oh: oh, ow: ow)
                    }
                }
                blk += workers
            }
        }
        if workers == 1 { run(0) } else { ctx.parallelFor(workers) { run($0) } }
    }
}

/// A 6×6 tile held in registers.
struct InlineTile {
    var a = (Float(0), Float(0), Float(0), Float(0), Float(0), Float(0),
             Float(0), Float(0), Float(0), Float(0), Float(0), Float(0),
             Float(0), Float(0), Float(0), Float(0), Float(0), Float(0),
             Float(0), Float(0), Float(0), Float(0), Float(0), Float(0),
             Float(0), Float(0), Float(0), Float(0), Float(0), Float(0),
             Float(0), Float(0), Float(0), Float(0), Float(0), Float(0))

    @inline(__always)
    mutating func set(_ r: Int, _ v0: Float, _ v1: Float, _ v2: Float, _ v3: Float, _ v4: Float, _ v5: Float) {
        withUnsafeMutableBytes(of: &a) { raw in
            let p = raw.baseAddress!.assumingMemoryBound(to: Float.self) + r * 6
            p[0] = v0; p[1] = v1; p[2] = v2; p[3] = v3; p[4] = v4; p[5] = v5
        }
    }

    /// Writes `Bᵀ d B` element ξ to `dst[ξ * stride]`.
    @inline(__always)
    func inputTransform(into dst: UnsafeMutablePointer<Float>, stride: Int) {
        var t = self.a
        withUnsafeMutableBytes(of: &t) { raw in
            let d = raw.baseAddress!.assumingMemoryBound(to: Float.self)
            // columns: Bᵀ applied to each column (rows combine)
            var buf = (Float(0), Float(0), Float(0), Float(0), Float(0), Float(0),
                       Float(0), Float(0), Float(0), Float(0), Float(0), Float(0),
                       Float(0), Float(0), Float(0), Float(0), Float(0), Float(0),
                       Float(0), Float(0), Float(0), Float(0), Float(0), Float(0),
                       Float(0), Float(0), Float(0), Float(0), Float(0), Float(0),
                       Float(0), Float(0), Float(0), Float(0), Float(0), Float(0))
            withUnsafeMutableBytes(of: &buf) { braw in
                let b = braw.baseAddress!.assumingMemoryBound(to: Float.self)
                for c in 0..<6 {
                    let d0 = d[c], d1 = d[6 + c], d2 = d[12 + c], d3 = d[18 + c], d4 = d[24 + c], d5 = d[30 + c]
                    b[c] = 4 * d0 - 5 * d2 + d4
                    b[6 + c] = -4 * d1 - 4 * d2 + d3 + d4
                    b[12 + c] = 4 * d1 - 4 * d2 - d3 + d4
                    b[18 + c] = -2 * d1 - d2 + 2 * d3 + d4
                    b[24 + c] = 2 * d1 - d2 - 2 * d3 + d4
                    b[30 + c] = 4 * d1 - 5 * d3 + d5
                }
                for rr in 0..<6 {
                    let q = b + rr * 6
                    let d0 = q[0], d1 = q[1], d2 = q[2], d3 = q[3], d4 = q[4], d5 = q[5]
                    let o = dst + rr * 6 * stride
                    o[0] = 4 * d0 - 5 * d2 + d4
                    o[stride] = -4 * d1 - 4 * d2 + d3 + d4
                    o[2 * stride] = 4 * d1 - 4 * d2 - d3 + d4
                    o[3 * stride] = -2 * d1 - d2 + 2 * d3 + d4
                    o[4 * stride] = 2 * d1 - d2 - 2 * d3 + d4
                    o[5 * stride] = 4 * d1 - 5 * d3 + d5
                }
            }
        }
    }

    /// Reads the 36 products `m[ξ * stride]`, writes the in-bounds part of `Aᵀ M A + bias`.
    @inline(__always)
    static func outputTransform(from m: UnsafeMutablePointer<Float>, stride: Int, bias: Float,
                                into plane: UnsafeMutablePointer<Float>, oy: Int, ox: Int, oh: Int, ow: Int) {
        var buf = (Float(0), Float(0), Float(0), Float(0), Float(0), Float(0),
                   Float(0), Float(0), Float(0), Float(0), Float(0), Float(0),
                   Float(0), Float(0), Float(0), Float(0), Float(0), Float(0),
                   Float(0), Float(0), Float(0), Float(0), Float(0), Float(0))
        withUnsafeMutableBytes(of: &buf) { braw in
            let b = braw.baseAddress!.assumingMemoryBound(to: Float.self) // 4 rows × 6
            for c in 0..<6 {
                let m0 = m[c * stride], m1 = m[(6 + c) * stride], m2 = m[(12 + c) * stride]
                let m3 = m[(18 + c) * stride], m4 = m[(24 + c) * stride], m5 = m[(30 + c) * stride]
                b[c] = m0 + m1 + m2 + m3 + m4
                b[6 + c] = m1 - m2 + 2 * m3 - 2 * m4
                b[12 + c] = m1 + m2 + 4 * m3 + 4 * m4
                b[18 + c] = m1 - m2 + 8 * m3 - 8 * m4 + m5
            }
            let rows = min(4, oh - oy), cols = min(4, ow - ox)
            for r in 0..<rows {
                let q = b + r * 6
                let m0 = q[0], m1 = q[1], m2 = q[2], m3 = q[3], m4 = q[4], m5 = q[5]
                let o = plane + (oy + r) * ow + ox
                let v0 = m0 + m1 + m2 + m3 + m4 + bias
                let v1 = m1 - m2 + 2 * m3 - 2 * m4 + bias
                let v2 = m1 + m2 + 4 * m3 + 4 * m4 + bias
                let v3 = m1 - m2 + 8 * m3 - 8 * m4 + m5 + bias
                if cols == 4 { o[0] = v0; o[1] = v1; o[2] = v2; o[3] = v3 } else {
                    o[0] = v0
                    if cols > 1 { o[1] = v1 }
                    if cols > 2 { o[2] = v2 }
                }
            }
        }
    }
}
