import Engine
import Foundation
import Testing
@testable import VQModel

/// `lipsyncTargetMask`: the UNet zeroes the target's mouth tokens before it runs. (The trained
/// path, the engine against PyTorch on exported masked weights, is training/tests/test_train.py.)
@Suite struct LipSyncMaskTests {
    func model(mask: [Int]?) throws -> SwapTalkModel {
        var c = ModelConfig.tiny
        c.lipsyncTargetMask = mask
        return try SwapTalkModel(config: c, tensors: Dictionary(uniqueKeysWithValues: SwapTalkModel.initialWeights(c, seed: 3)))
    }

    func grid(_ seed: UInt64) -> Tensor {
        var rng = SeededRandom(seed: seed)
        let c = ModelConfig.tiny
        return Tensor(shape: [c.embedDim, c.halfGrid.h, c.halfGrid.w], values: rng.uniforms(c.embedDim * c.halfGrid.h * c.halfGrid.w, -1, 1))
    }

    @Test func tokensUnderTheMaskDoNotReachTheOutputAndTheOthersDo() throws {
        let m = try model(mask: [1, 4, 2, 6])
        let ctx = ComputeContext(threads: 1)
        let audio = try m.audio(mel: ctx.workspace.zeros([16, 80]), ctx).copy()
        let reference = grid(1), target = grid(2)
        let base = try m.lipsync(target: target, reference: reference, audio: audio, ctx).copy()
        let c = ModelConfig.tiny
        // A change inside the masked box (row 2, column 3) leaves the output as it was …
        let inside = target.copy(); inside[(0 * c.halfGrid.h + 2) * c.halfGrid.w + 3] += 5
        let same = try m.lipsync(target: inside, reference: reference, audio: audio, ctx)
        #expect(Fixtures.maxRelError(same, base) == 0)
        // … one outside it (row 0) does not, and the caller's target is left untouched.
        let outside = target.copy(); outside[0] += 5
        let moved = try m.lipsync(target: outside, reference: reference, audio: audio, ctx)
        #expect(Fixtures.maxRelError(moved, base) > 0)
        #expect(inside[(0 * c.halfGrid.h + 2) * c.halfGrid.w + 3] == target[(0 * c.halfGrid.h + 2) * c.halfGrid.w + 3] + 5)
    }

    @Test func manifestRoundTripsTheMaskAndOlderManifestsHaveNone() throws {
        var c = ModelConfig.tiny
        c.lipsyncTargetMask = [1, 4, 2, 6]
        let back = try JSONDecoder().decode(ModelConfig.self, from: try c.manifestJSON())
        #expect(back == c)
        let old = try JSONDecoder().decode(ModelConfig.self, from: try ModelConfig.tiny.manifestJSON())
        #expect(old.lipsyncTargetMask == nil)
        #expect(!String(decoding: try ModelConfig.tiny.manifestJSON(), as: UTF8.self).contains("lipsyncTargetMask"))
    }

    @Test(arguments: [[0, 5, 0, 8], [2, 2, 0, 8], [0, 4, 0, 9], [1, 2, 3]])
    func aMaskOutsideTheGridIsRejected(mask: [Int]) {
        var c = ModelConfig.tiny
        c.lipsyncTargetMask = mask
        #expect(throws: ModelError.self) { try c.validate() }
    }
}
