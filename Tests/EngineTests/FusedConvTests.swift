import Foundation
import Testing
@testable import Engine

/// The fused path (GroupNorm + SiLU applied by the convolution as it reads its input) and the
/// two builds of the vector kernels, against the unfused sequence and naive loops.
@Suite struct FusedConvTests {
    typealias R = OpsTests

    /// GroupNorm (+ SiLU) in double precision, as PyTorch defines it.
    static func naiveGroupNorm(_ x: Tensor, groups g: Int, _ gamma: Tensor, _ beta: Tensor, silu: Bool) -> Tensor {
        let c = x.shape[0], plane = x.count / c, n = c / g * plane
        var out = [Float](repeating: 0, count: x.count)
        for gi in 0..<g {
            var m = 0.0; for i in 0..<n { m += Double(x[gi * n + i]) }; m /= Double(n)
            var v = 0.0; for i in 0..<n { v += pow(Double(x[gi * n + i]) - m, 2) }; v /= Double(n)
            for i in 0..<n {
                let ch = (gi * n + i) / plane
                var t = (Double(x[gi * n + i]) - m) / (v + 1e-6).squareRoot() * Double(gamma[ch]) + Double(beta[ch])
                if silu { t = t / (1 + exp(-t)) }
                out[gi * n + i] = Float(t)
            }
        }
        return Tensor(shape: x.shape, values: out)
    }

    /// `conv(up(silu(groupnorm(x)))) + residual`: fused (``GroupNorm/affine(_:activation:_:)``
    /// into ``Conv2D``) equals the unfused sequence exactly and a naive double-precision
    /// reference within the algorithm's tolerance, with every kernel build and 1 and 2 threads.
    @Test(arguments: [
        // (cin, cout, h, w, k, stride, pad, groups, algorithm 0 auto / 1 winograd / 2 im2col, upsample, residual, silu)
        (6, 5, 7, 9, 3, 1, 1, 3, 1, false, false, true), (4, 6, 13, 11, 3, 1, 1, 2, 1, true, true, true),
        (8, 3, 9, 13, 3, 1, 0, 4, 1, false, true, true), (16, 8, 40, 36, 3, 1, 1, 8, 1, false, true, true),
        (8, 8, 21, 19, 3, 1, 1, 2, 1, true, false, false), (6, 4, 9, 7, 3, 2, 1, 3, 0, false, false, true),
        (5, 7, 11, 10, 3, 1, 1, 5, 2, false, true, true), (6, 3, 8, 9, 1, 1, 0, 2, 0, false, true, true),
        (32, 3, 33, 31, 3, 1, 1, 8, 0, false, false, true),
    ])
    func fusedNormIntoConvolution(_ p: (Int, Int, Int, Int, Int, Int, Int, Int, Int, Bool, Bool, Bool)) throws {
        let (cin, cout, h, w, k, stride, pad, groups, algorithm, up, withResidual, silu) = p
        var rng = SeededRandom(seed: UInt64(cin * 7919 + cout * 131 + h * 17 + w + pad))
        let x = R.rand([cin, h, w], &rng, -3, 4), gamma = R.rand([cin], &rng, 0.5, 1.5), beta = R.rand([cin], &rng)
        let wt = R.rand([cout, cin, k, k], &rng), b = R.rand([cout], &rng)
        let gn = GroupNorm(groups: groups, weight: gamma, bias: beta, eps: 1e-6)
        let alg: Conv2D.Algorithm = algorithm == 1 ? .winograd : algorithm == 2 ? .im2col : .auto
        let conv = Conv2D(weight: wt, bias: b, stride: stride, padding: pad, algorithm: alg)
        let f = up ? 2 : 1
        let o = conv.outputSize(h: h * f, w: w * f)
        let res = R.rand([cout, o.h, o.w], &rng)
        // naive reference: normalise, upsample, convolve, add
        let nx = Self.naiveGroupNorm(x, groups: groups, gamma, beta, silu: silu)
        var xu = [Float](repeating: 0, count: cin * h * f * w * f)
        for c in 0..<cin { for y in 0..<(h * f) { for xx in 0..<(w * f) { xu[(c * h * f + y) * w * f + xx] = nx[(c * h + y / f) * w + xx / f] } } }
        var ref = R.naiveConv(Tensor(shape: [cin, h * f, w * f], values: xu), wt, b, stride: stride, pad: pad)
        if withResidual { for i in 0..<ref.count { ref[i] += res[i] } }
        let act: FusedActivation = silu ? .silu : .none
        // the kernel builds agree exactly at a given thread count (the split of a product
        // over threads may change its rounding)
        var first: [Int: [Float]] = [:]
        for kernels in KernelSet.available {
            for threads in [1, 2] {
                let ctx = ComputeContext(threads: threads)
                ctx.kernels = kernels
                let unfused = conv(gn(x, activation: act, ctx), upsample2x: up, residual: withResidual ? res : nil, ctx)
                let fused = conv(x, input: gn.affine(x, activation: act, ctx), upsample2x: up, residual: withResidual ? res : nil, ctx)
                #expect(fused.shape == [cout, o.h, o.w])
                #expect(fused.array == unfused.array, "fused vs unfused \(p), \(kernels.name), \(threads) threads")
                #expect(R.maxRelError(fused, ref) < 3e-5, "vs naive \(p), \(kernels.name), \(threads) threads")
                if let f = first[threads] { #expect(fused.array == f, "\(kernels.name) vs baseline, \(threads) threads") } else { first[threads] = fused.array }
            }
        }
    }

    /// im2col convolutions on larger odd maps with a residual, stride 1 and 2.
    @Test(arguments: [(32, 12, 40, 40, 3, 1, 1), (24, 10, 47, 33, 3, 2, 1), (7, 5, 30, 17, 5, 1, 2), (16, 9, 25, 26, 4, 2, 1)])
    func im2colLargerMaps(_ p: (Int, Int, Int, Int, Int, Int, Int)) {
        let (cin, cout, h, w, k, stride, pad) = p
        var rng = SeededRandom(seed: UInt64(cin * 100 + h + w))
        let x = R.rand([cin, h, w], &rng), wt = R.rand([cout, cin, k, k], &rng), b = R.rand([cout], &rng)
        let conv = Conv2D(weight: wt, bias: b, stride: stride, padding: pad, algorithm: .im2col)
        let o = conv.outputSize(h: h, w: w)
        let res = R.rand([cout, o.h, o.w], &rng)
        var ref = R.naiveConv(x, wt, b, stride: stride, pad: pad)
        for i in 0..<ref.count { ref[i] += res[i] }
        for threads in [1, 2] {
            let ctx = ComputeContext(threads: threads)
            #expect(R.maxRelError(conv(x, upsample2x: false, residual: res, ctx), ref) < 2e-6, "\(p) \(threads) threads")
        }
    }

    /// Each kernel of the AVX2 build gives the baseline build's floats exactly (odd lengths:
    /// vector bodies and scalar tails).
    @Test func kernelBuildsAgree() throws {
        guard KernelSet.available.count == 2 else { return }
        let a = KernelSet.baseline, b = KernelSet.avx2
        var rng = SeededRandom(seed: 99)
        for n in [1, 7, 8, 13, 1000, 4099] {
            let x = R.rand([n], &rng, -9, 9)
            for op in [\KernelSet.silu, \KernelSet.gelu, \KernelSet.softmaxRow] {
                let u = x.copy(), v = x.copy()
                a[keyPath: op](u.data, n); b[keyPath: op](v.data, n)
                #expect(u.array == v.array, "n \(n)")
            }
            let ma = a.moments(x.data, n), mb = b.moments(x.data, n)
            #expect(abs(ma.mean - mb.mean) <= 1e-6 * max(1, abs(ma.mean)) && abs(ma.variance - mb.variance) <= 1e-6 * max(1, ma.variance))
            let u = Tensor.zeros([n]), v = Tensor.zeros([n])
            a.affine(x.data, u.data, n, 0.7, -0.2, true); b.affine(x.data, v.data, n, 0.7, -0.2, true)
            #expect(u.array == v.array)
            #expect(R.maxRelError(u, x.array.map { let t = $0 * 0.7 - 0.2; return t / (1 + exp(-t)) }) < 1e-6)
        }
    }
}
