import Foundation
import Testing
@testable import Engine

/// The convolution algorithms chosen by map size and channel count: the direct 3×3 loop for
/// few output channels, and the two ways a multi-threaded Winograd convolution splits its work,
/// each against the naive loop on odd shapes.
@Suite struct ConvAlgorithmTests {
    typealias R = OpsTests

    /// The direct loop (up to ``Conv2D/directMaxOutChannels`` outputs): widths that leave vector
    /// tails, padding 0–2, bias and residual, 1 and 2 threads, every kernel build (which agree
    /// exactly).
    @Test(arguments: [
        // (cin, cout, h, w, pad, residual)
        (32, 3, 33, 31, 1, false), (5, 1, 7, 5, 1, true), (7, 4, 12, 40, 0, true), (3, 2, 9, 70, 2, false),
        (16, 3, 64, 64, 1, true), (1, 4, 3, 3, 1, false),
    ])
    func directConvolution(_ p: (Int, Int, Int, Int, Int, Bool)) {
        let (cin, cout, h, w, pad, withResidual) = p
        var rng = SeededRandom(seed: UInt64(cin * 1009 + cout * 101 + h * 11 + w + pad))
        let x = R.rand([cin, h, w], &rng), wt = R.rand([cout, cin, 3, 3], &rng), b = R.rand([cout], &rng)
        let conv = Conv2D(weight: wt, bias: b, stride: 1, padding: pad)
        #expect(conv.usesDirect(oh: h + 2 * pad - 2, ow: w + 2 * pad - 2), "\(cout) outputs should take the direct loop")
        let o = conv.outputSize(h: h, w: w)
        let res = R.rand([cout, o.h, o.w], &rng)
        var ref = R.naiveConv(x, wt, b, stride: 1, pad: pad)
        if withResidual { for i in 0..<ref.count { ref[i] += res[i] } }
        var first: [Float]?
        for kernels in KernelSet.available {
            for threads in [1, 2] {
                let ctx = ComputeContext(threads: threads)
                ctx.kernels = kernels
                let y = conv(x, upsample2x: false, residual: withResidual ? res : nil, ctx)
                #expect(y.shape == [cout, o.h, o.w])
                #expect(R.maxRelError(y, ref) < 2e-6, "\(p), \(kernels.name), \(threads) threads")
                // every output is one thread's sum in a fixed order: no split changes its rounding
                if let f = first { #expect(y.array == f, "\(p), \(kernels.name), \(threads) threads") } else { first = y.array }
            }
        }
        // and through the upsampling path
        let upCtx = ComputeContext(threads: 2)     // owns the result's workspace
        let up = conv(x, upsample2x: true, residual: nil, upCtx)
        var xu = [Float](repeating: 0, count: cin * 4 * h * w)
        for c in 0..<cin { for y in 0..<(2 * h) { for xx in 0..<(2 * w) { xu[(c * 2 * h + y) * 2 * w + xx] = x[(c * h + y / 2) * w + xx / 2] } } }
        #expect(R.maxRelError(up, R.naiveConv(Tensor(shape: [cin, 2 * h, 2 * w], values: xu), wt, b, stride: 1, pad: pad)) < 2e-6)
    }

    /// Few output channels on a map larger than the caches go back to Winograd, where the
    /// direct loop measured slower; a forced direct loop stays direct at any size.
    @Test func directLoopOnlyOnCachedMaps() {
        var rng = SeededRandom(seed: 3)
        let conv = Conv2D(weight: R.rand([3, 64, 3, 3], &rng), bias: nil, stride: 1, padding: 1)
        #expect(conv.usesDirect(oh: 128, ow: 128) && !conv.usesWinograd(oh: 128, ow: 128))
        #expect(!conv.usesDirect(oh: 320, ow: 320) && conv.usesWinograd(oh: 320, ow: 320))
        let forced = Conv2D(weight: R.rand([3, 64, 3, 3], &rng), bias: nil, stride: 1, padding: 1, algorithm: .direct)
        #expect(forced.usesDirect(oh: 320, ow: 320) && !forced.usesWinograd(oh: 320, ow: 320))
        #expect(!Conv2D(weight: R.rand([5, 8, 3, 3], &rng), bias: nil, stride: 1, padding: 1).usesDirect(oh: 16, ow: 16))
    }

    /// Winograd with 2 threads split into blocks of tile rows and as whole-map phases (input
    /// transform by channel slices, products claimed one at a time, output by channel slices)
    /// gives the naive result either way, with and without a fused GroupNorm + SiLU input (whose
    /// per-channel scale and shift each slice must pick from its own channels), upsampling and a
    /// residual.
    @Test(arguments: [
        // (cin, cout, h, w, pad, upsample, residual, fused norm)
        (16, 24, 16, 16, 1, false, true, false), (13, 7, 9, 21, 1, true, false, true),
        (8, 8, 33, 17, 0, false, true, true), (24, 16, 20, 20, 1, false, false, false),
        (6, 10, 40, 44, 1, true, true, true), (9, 5, 5, 6, 1, false, true, false),
    ])
    func winogradSplits(_ p: (Int, Int, Int, Int, Int, Bool, Bool, Bool)) {
        let (cin, cout, h, w, pad, up, withResidual, fused) = p
        var rng = SeededRandom(seed: UInt64(cin * 7 + cout * 1013 + h * 31 + w * 3 + pad))
        let x = R.rand([cin, h, w], &rng, -2, 3), wt = R.rand([cout, cin, 3, 3], &rng), b = R.rand([cout], &rng)
        let groups = cin % 2 == 0 ? 2 : 1
        let gn = GroupNorm(groups: groups, weight: R.rand([cin], &rng, 0.5, 1.5), bias: R.rand([cin], &rng), eps: 1e-6)
        let f = up ? 2 : 1
        var conv = Conv2D(weight: wt, bias: b, stride: 1, padding: pad, algorithm: .winograd)
        let o = conv.outputSize(h: h * f, w: w * f)
        let res = R.rand([cout, o.h, o.w], &rng)
        let source = fused ? FusedConvTests.naiveGroupNorm(x, groups: groups, gn.weight, gn.bias, silu: true) : x
        var xu = [Float](repeating: 0, count: cin * h * f * w * f)
        for c in 0..<cin { for y in 0..<(h * f) { for xx in 0..<(w * f) { xu[(c * h * f + y) * w * f + xx] = source[(c * h + y / f) * w + xx / f] } } }
        var ref = R.naiveConv(Tensor(shape: [cin, h * f, w * f], values: xu), wt, b, stride: 1, pad: pad)
        if withResidual { for i in 0..<ref.count { ref[i] += res[i] } }
        for (threads, split) in [(1, nil), (2, nil), (2, Winograd.Split.blocks), (2, Winograd.Split.wholeMap)] as [(Int, Winograd.Split?)] {
            conv.winogradSplit = split
            let ctx = ComputeContext(threads: threads)
            let input = fused ? gn.affine(x, activation: .silu, ctx) : nil
            let y = conv(x, input: input, upsample2x: up, residual: withResidual ? res : nil, ctx)
            #expect(y.shape == [cout, o.h, o.w])
            #expect(R.maxRelError(y, ref) < 3e-5, "\(p), \(threads) threads, split \(String(describing: split))")
        }
    }
}
