import Foundation
import Testing
import BLAS
@testable import Engine

/// Every engine operation against a naive loop on random (odd, strided, padded) shapes.
@Suite struct OpsTests {
    static func rand(_ shape: [Int], _ rng: inout SeededRandom, _ lo: Float = -1, _ hi: Float = 1) -> Tensor {
        Tensor(shape: shape, values: rng.uniforms(shape.reduce(1, *), lo, hi))
    }

    static func maxRelError(_ a: Tensor, _ b: [Float]) -> Float {
        precondition(a.count == b.count)
        var m: Float = 0, s: Float = 1e-12
        for i in 0..<b.count { m = max(m, abs(a[i] - b[i])); s = max(s, abs(b[i])) }
        return m / s
    }

    static func naiveConv(_ x: Tensor, _ w: Tensor, _ b: Tensor?, stride: Int, pad: Int) -> [Float] {
        let ci = x.shape[0], h = x.shape[1], wd = x.shape[2]
        let co = w.shape[0], kh = w.shape[2], kw = w.shape[3]
        let oh = (h + 2 * pad - kh) / stride + 1, ow = (wd + 2 * pad - kw) / stride + 1
        var out = [Float](repeating: 0, count: co * oh * ow)
        for o in 0..<co { for y in 0..<oh { for xx in 0..<ow {
            var s = Double(b?[o] ?? 0)
            for c in 0..<ci { for ky in 0..<kh { for kx in 0..<kw {
                let iy = y * stride - pad + ky, ix = xx * stride - pad + kx
                if iy >= 0 && iy < h && ix >= 0 && ix < wd {
                    s += Double(x[(c * h + iy) * wd + ix]) * Double(w[((o * ci + c) * kh + ky) * kw + kx])
                }
            } } }
            out[(o * oh + y) * ow + xx] = Float(s)
        } } }
        return out
    }

    @Test(arguments: [
        // (cin, cout, h, w, k, stride, pad, algorithm)
        (3, 5, 7, 9, 3, 1, 1, 0), (4, 6, 11, 6, 3, 1, 1, 1), (5, 3, 9, 13, 3, 1, 0, 1),
        (3, 4, 9, 7, 3, 2, 1, 0), (2, 7, 8, 8, 1, 1, 0, 0), (6, 4, 10, 5, 1, 2, 0, 0),
        (3, 2, 7, 7, 5, 1, 2, 0), (4, 3, 6, 9, 4, 2, 1, 0), (7, 9, 5, 5, 3, 1, 1, 1),
        (16, 24, 13, 17, 3, 1, 1, 1),
    ])
    func conv2d(_ p: (Int, Int, Int, Int, Int, Int, Int, Int)) {
        var rng = SeededRandom(seed: UInt64(p.0 * 1000 + p.1 * 100 + p.2 * 10 + p.3 + p.5))
        let x = Self.rand([p.0, p.2, p.3], &rng)
        let w = Self.rand([p.1, p.0, p.4, p.4], &rng)
        let b = Self.rand([p.1], &rng)
        for threads in [1, 2] {
            let ctx = ComputeContext(threads: threads)
            let alg: Conv2D.Algorithm = p.7 == 1 ? .winograd : (p.4 == 3 && p.5 == 1 ? .im2col : .auto)
            let conv = Conv2D(weight: w, bias: b, stride: p.5, padding: p.6, algorithm: alg)
            let y = conv(x, ctx)
            let ref = Self.naiveConv(x, w, b, stride: p.5, pad: p.6)
            #expect(y.count == ref.count)
            #expect(Self.maxRelError(y, ref) < (p.7 == 1 ? 1e-5 : 2e-6), "conv \(p) threads \(threads)")
            let y2 = Conv2D(weight: w, bias: nil, stride: p.5, padding: p.6, algorithm: alg)(x, ctx)
            let ref2 = Self.naiveConv(x, w, nil, stride: p.5, pad: p.6)
            #expect(Self.maxRelError(y2, ref2) < (p.7 == 1 ? 1e-5 : 2e-6))
        }
    }

    /// `conv(up2x(x)) + residual` fused in one call equals the naive convolution of the
    /// explicitly upsampled map plus the residual (Winograd, im2col and 1×1 paths).
    @Test(arguments: [
        // (cin, cout, h, w, k, pad, algorithm 0 auto / 1 winograd / 2 im2col, upsample, residual)
        (5, 6, 7, 9, 3, 1, 1, true, true), (4, 3, 6, 5, 3, 1, 1, true, false), (8, 8, 13, 11, 3, 1, 1, false, true),
        (3, 5, 5, 7, 3, 1, 2, true, true), (6, 4, 9, 9, 3, 1, 2, false, true), (7, 5, 6, 7, 1, 0, 0, false, true),
        (4, 4, 5, 6, 1, 0, 0, true, true), (3, 4, 11, 10, 3, 0, 1, true, true), (16, 24, 10, 12, 3, 1, 0, true, true),
    ])
    func convFusedUpsampleAndResidual(_ p: (Int, Int, Int, Int, Int, Int, Int, Bool, Bool)) {
        let (cin, cout, h, w, k, pad, algorithm, up, withResidual) = p
        var rng = SeededRandom(seed: UInt64(cin * 1000 + cout * 100 + h * 10 + w + pad))
        let x = Self.rand([cin, h, w], &rng)
        let wt = Self.rand([cout, cin, k, k], &rng)
        let b = Self.rand([cout], &rng)
        // explicit upsampling for the reference
        let f = up ? 2 : 1, uh = h * f, uw = w * f
        var xu = [Float](repeating: 0, count: cin * uh * uw)
        for c in 0..<cin { for y in 0..<uh { for xx in 0..<uw { xu[(c * uh + y) * uw + xx] = x[(c * h + y / f) * w + xx / f] } } }
        let oh = uh + 2 * pad - k + 1, ow = uw + 2 * pad - k + 1
        let res = Self.rand([cout, oh, ow], &rng)
        var ref = Self.naiveConv(Tensor(shape: [cin, uh, uw], values: xu), wt, b, stride: 1, pad: pad)
        if withResidual { for i in 0..<ref.count { ref[i] += res[i] } }
        let alg: Conv2D.Algorithm = algorithm == 1 ? .winograd : algorithm == 2 ? .im2col : .auto
        let conv = Conv2D(weight: wt, bias: b, stride: 1, padding: pad, algorithm: alg)
        for threads in [1, 2] {
            let ctx = ComputeContext(threads: threads)
            let y = conv(x, upsample2x: up, residual: withResidual ? res : nil, ctx)
            #expect(y.shape == [cout, oh, ow])
            // Winograd's transforms round more than a direct sum
            let tolerance: Float = conv.usesWinograd(oh: oh, ow: ow) ? 1e-5 : 2e-6
            #expect(Self.maxRelError(y, ref) < tolerance, "conv \(p) threads \(threads)")
        }
    }

    /// The split product (by rows, by columns, two parts per thread) equals one sgemm.
    @Test(arguments: [(300, 70, 200), (40, 500, 250), (130, 2100, 300), (2100, 130, 300), (33, 1000, 130)])
    func splitGemm(_ p: (Int, Int, Int)) {
        let (m, n, k) = p
        var rng = SeededRandom(seed: UInt64(m + n + k))
        for (ta, tb) in [(false, false), (true, false), (false, true)] {
            let a = Self.rand([m * k], &rng), b = Self.rand([k * n], &rng), c0 = Self.rand([m * n], &rng)
            let lda = ta ? m : k, ldb = tb ? k : n
            let want = c0.copy(), got = c0.copy()
            BLAS.sgemm(transA: ta, transB: tb, m: m, n: n, k: k, alpha: 0.5, a: a.data, lda: lda, b: b.data, ldb: ldb,
                       beta: 1, c: want.data, ldc: n)
            ComputeContext(threads: 2).gemm(transA: ta, transB: tb, m: m, n: n, k: k, alpha: 0.5, a: a.data, lda: lda,
                                            b: b.data, ldb: ldb, beta: 1, c: got.data, ldc: n)
            #expect(Self.maxRelError(got, want.array) < 1e-6, "gemm \(p) transA \(ta) transB \(tb)")
        }
    }

    @Test func linear() {
        var rng = SeededRandom(seed: 7)
        let x = Self.rand([13, 9], &rng), w = Self.rand([5, 9], &rng), b = Self.rand([5], &rng)
        let ctx = ComputeContext()
        let y = Linear(weight: w, bias: b)(x, ctx)
        var ref = [Float](repeating: 0, count: 13 * 5)
        for n in 0..<13 { for o in 0..<5 {
            var s = b[o]; for i in 0..<9 { s += x[n * 9 + i] * w[o * 9 + i] }; ref[n * 5 + o] = s
        } }
        #expect(y.shape == [13, 5])
        #expect(Self.maxRelError(y, ref) < 1e-6)
    }

    @Test(arguments: [(6, 3, 5, 7), (8, 4, 3, 3), (12, 1, 4, 9), (5, 5, 2, 3),
                      // groups of several thousand values far from zero (one-pass moments must not cancel)
                      (16, 4, 33, 31), (8, 2, 40, 40)])
    func groupNorm(_ p: (Int, Int, Int, Int)) {
        var rng = SeededRandom(seed: UInt64(p.0 + p.1 * 31))
        let (c, g, h, w) = p
        let big = c * h * w > 4096
        let x = Self.rand([c, h, w], &rng, big ? 9 : -2, big ? 11 : 3), gamma = Self.rand([c], &rng), beta = Self.rand([c], &rng)
        let ctx = ComputeContext(threads: 2)
        for act in [FusedActivation.none, .silu] {
            let y = GroupNorm(groups: g, weight: gamma, bias: beta, eps: 1e-6)(x, activation: act, ctx)
            var ref = [Float](repeating: 0, count: x.count)
            let n = c / g * h * w
            for gi in 0..<g {
                var m = 0.0; for i in 0..<n { m += Double(x[gi * n + i]) }; m /= Double(n)
                var v = 0.0; for i in 0..<n { v += pow(Double(x[gi * n + i]) - m, 2) }; v /= Double(n)
                for i in 0..<n {
                    let ch = (gi * n + i) / (h * w)
                    var t = (Double(x[gi * n + i]) - m) / (v + 1e-6).squareRoot() * Double(gamma[ch]) + Double(beta[ch])
                    if act == .silu { t = t / (1 + exp(-t)) }
                    ref[gi * n + i] = Float(t)
                }
            }
            #expect(Self.maxRelError(y, ref) < 1e-5)
        }
    }

    @Test func layerNormAndActivations() {
        var rng = SeededRandom(seed: 11)
        let x = Self.rand([7, 10], &rng, -3, 3), gamma = Self.rand([10], &rng), beta = Self.rand([10], &rng)
        let ctx = ComputeContext()
        // short rows (scalar tail only), vector rows with a tail, and an input large enough
        // to be split over threads
        for (rows, d, threads) in [(7, 10, 1), (9, 35, 1), (300, 261, 2)] {
            let x = rows == 7 ? x : Self.rand([rows, d], &rng, -3, 3)
            let gamma = rows == 7 ? gamma : Self.rand([d], &rng), beta = rows == 7 ? beta : Self.rand([d], &rng)
            let lnCtx = ComputeContext(threads: threads)  // kept alive: the result views its workspace
            let y = LayerNorm(weight: gamma, bias: beta)(x, lnCtx)
            var ref = [Float](repeating: 0, count: rows * d)
            for r in 0..<rows {
                var m = 0.0; for i in 0..<d { m += Double(x[r * d + i]) }; m /= Double(d)
                var v = 0.0; for i in 0..<d { v += pow(Double(x[r * d + i]) - m, 2) }; v /= Double(d)
                for i in 0..<d { ref[r * d + i] = Float((Double(x[r * d + i]) - m) / (v + 1e-5).squareRoot() * Double(gamma[i]) + Double(beta[i])) }
            }
            withExtendedLifetime(lnCtx) { #expect(Self.maxRelError(y, ref) < 1e-5, "layernorm \(rows)×\(d)") }
        }

        let s = x.copy(); Activation.silu(s, ctx)
        #expect(Self.maxRelError(s, x.array.map { $0 / (1 + exp(-$0)) }) < 1e-6)
        let g = x.copy(); Activation.gelu(g, ctx)
        #expect(Self.maxRelError(g, x.array.map { Float(0.5 * Double($0) * (1 + erf(Double($0) / 2.0.squareRoot()))) }) < 1e-6)
        let sm = x.copy(); Activation.softmax(sm, ctx)
        var smRef = [Float]()
        for r in 0..<7 {
            let row = (0..<10).map { Double(x[r * 10 + $0]) }
            let mx = row.max()!, e = row.map { exp($0 - mx) }, t = e.reduce(0, +)
            smRef += e.map { Float($0 / t) }
        }
        #expect(Self.maxRelError(sm, smRef) < 1e-6)
    }

    @Test(arguments: [(5, 9, 12, 1), (7, 7, 12, 3), (4, 16, 8, 4), (11, 3, 6, 2),
                      // several blocks of query rows per head, odd widths (vector tails in softmax)
                      (70, 37, 12, 1), (45, 130, 8, 2), (33, 9, 20, 5)])
    func attention(_ p: (Int, Int, Int, Int)) {
        let (nq, nk, d, heads) = p
        var rng = SeededRandom(seed: UInt64(nq * 100 + nk))
        let q = Self.rand([nq, d], &rng), k = Self.rand([nk, d], &rng), v = Self.rand([nk, d], &rng)
        let ctx = ComputeContext(threads: 2)
        let y = Attention.scaledDotProduct(q: q, k: k, v: v, heads: heads, ctx)
        let ctx1 = ComputeContext(threads: 1)  // kept alive: results view its workspace
        let y1 = Attention.scaledDotProduct(q: q, k: k, v: v, heads: heads, ctx1)
        let dh = d / heads
        var ref = [Float](repeating: 0, count: nq * d)
        for h in 0..<heads { for i in 0..<nq {
            var s = (0..<nk).map { j in (0..<dh).reduce(0.0) { $0 + Double(q[i * d + h * dh + $1]) * Double(k[j * d + h * dh + $1]) } / Double(dh).squareRoot() }
            let mx = s.max()!; s = s.map { exp($0 - mx) }; let t = s.reduce(0, +)
            for c in 0..<dh { ref[i * d + h * dh + c] = Float((0..<nk).reduce(0.0) { $0 + s[$1] / t * Double(v[$1 * d + h * dh + c]) }) }
        } }
        #expect(Self.maxRelError(y, ref) < 1e-5)
        withExtendedLifetime(ctx1) { #expect(Self.maxRelError(y1, ref) < 1e-5) }

        // cross-attention module with projections of different widths
        let ctxTokens = Self.rand([nk, 5], &rng)
        let lin = { (o: Int, i: Int, rng: inout SeededRandom) in Linear(weight: Self.rand([o, i], &rng), bias: Self.rand([o], &rng)) }
        let mha = MultiHeadAttention(q: lin(d, d, &rng), k: lin(d, 5, &rng), v: lin(d, 5, &rng), out: lin(d, d, &rng), heads: heads)
        let out = mha(q, context: ctxTokens, ctx)
        let qq = mha.q(q, ctx), kk = mha.k(ctxTokens, ctx), vv = mha.v(ctxTokens, ctx)
        let ref2 = mha.out(Attention.scaledDotProduct(q: qq, k: kk, v: vv, heads: heads, ctx), ctx)
        #expect(out.shape == [nq, d])
        #expect(Self.maxRelError(out, ref2.array) == 0)
    }

    @Test func shapes() {
        var rng = SeededRandom(seed: 3)
        let ctx = ComputeContext()
        let x = Self.rand([3, 5, 7], &rng), y = Self.rand([2, 5, 7], &rng)
        let up = Shape.upsampleNearest2x(x, ctx)
        #expect(up.shape == [3, 10, 14])
        for c in 0..<3 { for i in 0..<10 { for j in 0..<14 { #expect(up[(c * 10 + i) * 14 + j] == x[(c * 5 + i / 2) * 7 + j / 2]) } } }
        let cat = Shape.concat([x, y], ctx)
        #expect(cat.shape == [5, 5, 7] && cat.array == x.array + y.array)
        let back = Shape.sliceChannels(cat, from: 3, count: 2)
        #expect(back.array == y.array)
        let top = Shape.sliceHeight(x, from: 0, count: 2, ctx), bottom = Shape.sliceHeight(x, from: 2, count: 3, ctx)
        let joined = Shape.concatHeight([top, bottom], ctx)
        #expect(joined.array == x.array)
        let t = Shape.transpose(x, rows: 3, cols: 35, ctx)
        for r in 0..<3 { for c in 0..<35 { #expect(t[c * 3 + r] == x[r * 35 + c]) } }
        let s = x.copy(); Shape.addInPlace(s, x)
        #expect(s.array == x.array.map { $0 * 2 })
    }

    @Test func vectorQuantization() {
        var rng = SeededRandom(seed: 5)
        let cb = Self.rand([37, 6], &rng), z = Self.rand([6, 3, 5], &rng)
        let ctx = ComputeContext()
        let (idx, q) = VectorQuantizer(codebook: cb)(z, ctx)
        for p in 0..<15 {
            var best = Double.infinity, bi = 0
            for k in 0..<37 {
                let d = (0..<6).reduce(0.0) { $0 + pow(Double(z[$1 * 15 + p]) - Double(cb[k * 6 + $1]), 2) }
                if d < best { best = d; bi = k }
            }
            #expect(Int(idx[p]) == bi)
            for e in 0..<6 { #expect(q[e * 15 + p] == cb[bi * 6 + e]) }
        }
    }

    @Test func scopedKeepsOnlyTheResult() {
        let ws = Workspace(capacity: 1 << 16)
        let keep = ws.zeros([4])
        let before = ws.mark()
        let r = ws.scoped { () -> Tensor in
            _ = ws.allocate(40_000)
            let t = ws.tensor([3])
            t[0] = 1; t[1] = 2; t[2] = 3
            return t
        }
        #expect(r.array == [1, 2, 3])
        #expect(r.data == ws.tensor([1]).data - 16, "result moved down to where the scratch began")
        #expect(keep.array == [0, 0, 0, 0])
        ws.rewind(to: before)
        #expect(ws.tensor([3]).data == r.data)
    }

    @Test func workspaceIsReusedAcrossFrames() {
        let ws = Workspace()
        for _ in 0..<3 {
            ws.reset()
            _ = ws.allocate(300_000); _ = ws.allocate(200_000)
        }
        let reserved = ws.reservedBytes
        for _ in 0..<5 { ws.reset(); _ = ws.allocate(300_000); _ = ws.allocate(200_000) }
        #expect(ws.reservedBytes == reserved)
    }
}
