import Engine
import Foundation

extension SwapTalkModel {
    /// Whether frames are faster run side by side, one thread each
    /// (``FrameBatch/Mode/framesInParallel``), than one at a time with each frame's work split
    /// over `threads` (``FrameBatch/Mode/splitEachFrame``), on this project's machines.
    ///
    /// Measured with `dubfarm model bench --threads 2 --batch 2` against `--threads 2`
    /// (docs/benchmarks.md): frames per second rose by about a quarter for `small` (whose layers are too
    /// small to split over two threads without losing a large share to hand-offs) and by about
    /// an eighth for `paper`, for one more workspace (`small` +50 MB, `paper` +220 MB peak RSS) and
    /// a frame's result coming a frame later. So a worker with several threads always runs frames
    /// side by side; `DUBFARM_FRAME_PARALLEL=0` (or `1`) forces the choice, for measurements.
    package func prefersFramesInParallel(threads: Int) -> Bool {
        if threads <= 1 { return false }
        if let v = ProcessInfo.processInfo.environment["DUBFARM_FRAME_PARALLEL"], let b = Int(v) { return b != 0 }
        return true
    }

    /// A ``FrameBatch`` for `threads` threads in the mode ``prefersFramesInParallel(threads:)`` picks.
    package func makeFrameBatch(threads: Int) -> FrameBatch {
        FrameBatch(threads: threads, mode: prefersFramesInParallel(threads: threads) ? .framesInParallel : .splitEachFrame)
    }

    /// ``runFrame(target:source:mel:_:)`` for several frames at once, spread over `batch`'s
    /// contexts. Each output is exactly what ``runFrame(target:source:mel:_:)`` gives for that
    /// frame on a context with the same thread count as the one it ran on (single-threaded in
    /// ``FrameBatch/Mode/framesInParallel``). Results are workspace tensors of the batch's
    /// contexts, valid until ``FrameBatch/reset()``.
    package func runFrames(targets: [Tensor], source: SwapSource, mels: [Tensor], _ batch: FrameBatch) throws -> [Tensor] {
        guard targets.count == mels.count else {
            throw ModelError(.badInput, "runFrames: \(targets.count) target images but \(mels.count) mel windows")
        }
        return try batch.map(targets.count) { i, ctx in try runFrame(target: targets[i], source: source, mel: mels[i], ctx) }
    }

    /// ``profileFrame(target:source:mel:_:)`` for a batch: each module runs for all frames at
    /// once (frames side by side on the batch's contexts), and its cost is the whole batch's —
    /// FLOPs of all frames and the wall time from the first frame's start of that module to the
    /// last frame's end — so `FLOPs / seconds` is the module's throughput.
    package func profileFrames(targets: [Tensor], source: SwapSource, mels: [Tensor], _ batch: FrameBatch) throws
        -> (images: [Tensor], costs: [ModuleCost]) {
        guard targets.count == mels.count else {
            throw ModelError(.badInput, "profileFrames: \(targets.count) target images but \(mels.count) mel windows")
        }
        let n = targets.count
        var costs: [ModuleCost] = []
        func phase<T>(_ name: String, _ body: (Int, ComputeContext) throws -> T) throws -> [T] {
            let f0 = batch.flops, c0 = Benchmark.cpuSeconds(), t0 = Benchmark.now()
            let r = try batch.map(n, body)
            let t1 = Benchmark.now(), c1 = Benchmark.cpuSeconds()
            costs.append(ModuleCost(module: name, flops: batch.flops - f0, seconds: t1 - t0, cpuSeconds: c1 - c0))
            return r
        }
        let s = config.imageSize, h = config.halfGrid.h
        let z = try phase("encode") { i, ctx in
            (try encode(Shape.sliceHeight(targets[i], from: 0, count: s / 2, ctx), ctx),
             try encode(Shape.sliceHeight(targets[i], from: s / 2, count: s / 2, ctx), ctx))
        }
        let grids = try phase("quantize") { i, ctx in
            Shape.concatHeight([try quantize(z[i].0, half: .upper, ctx).quantized, try quantize(z[i].1, half: .lower, ctx).quantized], ctx)
        }
        let swapped = try phase("swap") { i, ctx in try swap(target: grids[i], source: source, ctx) }
        let tokens = try phase("audio") { i, ctx in try audio(mel: mels[i], ctx) }
        let synced = try phase("lipsync") { i, ctx -> Tensor in
            let lower = Shape.sliceHeight(swapped[i], from: h, count: h, ctx)
            return try lipsync(target: lower, reference: lower, audio: tokens[i], ctx)
        }
        let images = try phase("decode") { i, ctx in
            try decode(Shape.concatHeight([Shape.sliceHeight(swapped[i], from: 0, count: h, ctx), synced[i]], ctx), ctx)
        }
        return (images, costs)
    }
}
