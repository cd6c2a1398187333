import Engine
import Foundation
import Testing
@testable import VQModel

/// Frames run side by side (``FrameBatch``, ``SwapTalkModel/runFrames(targets:source:mels:_:)``)
/// give exactly what one frame at a time gives.
@Suite struct FrameBatchTests {
    struct Failure: Error, Equatable { let item: Int }

    @Test(arguments: [FrameBatch.Mode.framesInParallel, .splitEachFrame])
    func mapKeepsOrderAndStaticContexts(mode: FrameBatch.Mode) throws {
        let batch = FrameBatch(threads: 2, mode: mode)
        #expect(batch.width == (mode == .framesInParallel ? 2 : 1))
        #expect(batch.contexts.allSatisfy { $0.threads == (mode == .framesInParallel ? 1 : 2) })
        for count in [0, 1, 2, 5] {
            let r = try batch.map(count) { i, ctx in (i, ObjectIdentifier(ctx)) }
            #expect(r.map(\.0) == Array(0..<count))
            for (i, id) in r.map(\.1).enumerated() {
                #expect(id == ObjectIdentifier(batch.context(forItem: i, of: count)), "item \(i) of \(count)")
            }
        }
        // the lowest failing item's error is the one thrown; other items still run
        #expect(throws: Failure(item: 1)) {
            _ = try batch.map(6) { i, _ in if i == 1 || i == 4 { throw Failure(item: i) } }
        }
    }

    @Test func tinyFramesInParallelAreBitIdenticalToOneAtATime() throws {
        let model = try SwapTalkModel.load(directory: Fixtures.tiny)
        let c = model.config
        var rng = SeededRandom(seed: 7)
        let n = 5
        let targets = (0..<n).map { _ in Tensor(shape: [3, c.imageSize, c.imageSize], values: rng.uniforms(3 * c.imageSize * c.imageSize)) }
        let mels = (0..<n).map { _ in Tensor(shape: [c.melFrames, c.melBins], values: rng.uniforms(c.melFrames * c.melBins, -4, 2)) }
        let single = ComputeContext(threads: 1)
        let src = try model.prepareSource(image: targets[0], single)
        let want = try (0..<n).map { i -> Tensor in
            defer { single.workspace.reset() }
            return try model.runFrame(target: targets[i], source: src, mel: mels[i], single).copy()
        }
        let batch = FrameBatch(threads: 2, mode: .framesInParallel)
        for round in 0..<2 {
            let got = try model.runFrames(targets: targets, source: src, mels: mels, batch)
            for i in 0..<n {
                #expect(got[i].shape == want[i].shape)
                #expect(got[i].array == want[i].array, "frame \(i), round \(round): batched output differs from one frame at a time")
            }
            batch.reset()
            let profiled = try model.profileFrames(targets: targets, source: src, mels: mels, batch)
            #expect(profiled.costs.map(\.module) == SwapTalkModel.moduleNames)
            for i in 0..<n { #expect(profiled.images[i].array == want[i].array, "profiled frame \(i)") }
            batch.reset()
        }
        // frames split over two threads agree within the engine's tolerance
        let split = ComputeContext(threads: 2)
        for i in 0..<2 {
            let y = try model.runFrame(target: targets[i], source: src, mel: mels[i], split)
            #expect(Fixtures.maxRelError(y, want[i]) < 1e-5)
            split.workspace.reset()
        }
        #expect(throws: ModelError.self) { try model.runFrames(targets: targets, source: src, mels: [mels[0]], batch) }
    }

    @Test func batchMemoryDoesNotGrowWithFrames() throws {
        let model = try SwapTalkModel.load(directory: Fixtures.tiny)
        let c = model.config
        var rng = SeededRandom(seed: 8)
        let targets = (0..<2).map { _ in Tensor(shape: [3, c.imageSize, c.imageSize], values: rng.uniforms(3 * c.imageSize * c.imageSize)) }
        let mels = (0..<2).map { _ in Tensor(shape: [c.melFrames, c.melBins], values: rng.uniforms(c.melFrames * c.melBins)) }
        let batch = FrameBatch(threads: 2, mode: .framesInParallel)
        let src = try model.prepareSource(image: targets[1], batch.contexts[0])
        var reserved: [Int] = []
        for _ in 0..<6 {
            batch.reset()
            _ = try model.runFrames(targets: targets, source: src, mels: mels, batch)
            reserved.append(batch.reservedBytes)
        }
        #expect(Set(reserved.dropFirst(2)).count == 1, "workspace sizes \(reserved)")
    }

    @Test func framesRunSideBySideWithSeveralThreads() throws {
        guard ProcessInfo.processInfo.environment["DUBFARM_FRAME_PARALLEL"] == nil else { return }
        let m = try SwapTalkModel.load(directory: Fixtures.tiny)
        #expect(m.prefersFramesInParallel(threads: 2))
        #expect(!m.prefersFramesInParallel(threads: 1))
        #expect(m.makeFrameBatch(threads: 2).width == 2)
        #expect(m.makeFrameBatch(threads: 1).width == 1)
    }
}
