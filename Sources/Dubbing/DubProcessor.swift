import AudioFeatures
import DubfarmCore
import Engine
import FaceAnalysis
import Foundation
import VQModel
import Worker

/// Frames counted by a ``DubProcessor`` over its segment's output frames (context frames excluded).
package struct DubCounts: Sendable, Hashable {
    package var frames = 0
    package var framesWithFace = 0
    package var framesSwapped = 0
    package init() {}
}

/// One segment of the dub stage. Frames come back in order, each exactly once, ``FaceTracker``'s
/// latency later; memory is the tracker's window plus the model's scratch workspace.
///
/// With several threads and a model whose frames run faster side by side
/// (``SwapTalkModel/prefersFramesInParallel(threads:)``), frames that need the model are
/// collected until there is one per thread and run together, each on a single-threaded context
/// of its own (``FrameBatch``); frames are then handed back up to `threads − 1` model frames
/// later. Each frame's result is exactly the single-threaded model's for that frame.
package final class DubProcessor: FrameProcessor {
    let engine: DubEngine
    let context: StageContext
    let source: SwapSource?
    let batch: FrameBatch
    let mel: LogMel
    /// Tracked frames not yet handed back, in order, and how many of them need the model.
    private var pending: [TrackedFrame] = []
    private var pendingModelFrames = 0
    private var tracker: FaceTracker!
    package private(set) var counts = DubCounts()
    package private(set) var timings = DubTimings()

    /// A processor for one segment; `source` is the job's encoded source face (nil: lip sync only).
    ///
    /// `mode` overrides how the context's threads are spent (default: the model's preference).
    package init(engine: DubEngine, context: StageContext, source: SwapSource?, mode: FrameBatch.Mode? = nil) throws {
        guard context.frameRate.num > 0, context.frameRate.den > 0 else {
            throw DubfarmError(.badInput, "dub stage: unusable frame rate \(context.frameRate)")
        }
        self.engine = engine
        self.context = context
        self.source = source
        let model = engine.model.model
        self.batch = mode.map { FrameBatch(threads: context.threads, mode: $0) } ?? model.makeFrameBatch(threads: context.threads)
        var t = DubTimings()
        self.mel = t.measure("audio", frames: max(context.outputFrames.count, 1)) { Self.logMel(context.audio) }
        self.timings = t
        let analyzer = engine.analyzer
        // Detection and landmarks timed apart; the same analysis as FaceAnalyzer.analyze.
        self.tracker = FaceTracker(analyzer: analyzer, parameters: engine.trackerParameters) { [unowned self] frame, near in
            guard let best = self.timings.measure("detect", { analyzer.detectFace(frame, near: near) }) else { return nil }
            return self.timings.measure("landmarks") { analyzer.observe(frame, detectorBox: best.box, neighbors: best.neighbors) }
        }
    }

    /// The log-mel frames of a task's audio window (``ModelInputs/logMel(_:)``).
    static func logMel(_ audio: AudioWindow) -> LogMel { ModelInputs.logMel(audio) }

    /// Called with each frame's index and model inputs just before the model runs (tests: the
    /// dataset builder's crops and mel windows are compared with these).
    var modelInputsObserver: ((Int, ModelInputs) -> Void)?

    package func process(_ frame: VideoFrame) throws -> [VideoFrame] {
        // Faces are looked for, and the model run, in the picture as a player shows it; the
        // frame goes back in the input's own orientation (the output keeps the rotation).
        let upright = context.rotation == 0 ? frame : frame.rotated(by: context.rotation)
        return try turnedBack(release(track { tracker.push(upright) }, all: false))
    }

    package func flush() throws -> [VideoFrame] {
        try turnedBack(release(track { tracker.flush() }, all: true))
    }

    private func turnedBack(_ frames: [VideoFrame]) -> [VideoFrame] {
        context.rotation == 0 ? frames : frames.map { $0.rotated(by: -context.rotation) }
    }

    /// Queues newly tracked frames and renders the queue once it holds a frame for every
    /// context of the batch (or no model frame at all, or at the end).
    private func release(_ tracked: [TrackedFrame], all: Bool) throws -> [VideoFrame] {
        var out: [VideoFrame] = []
        for t in tracked {
            pending.append(t)
            if needsModel(t) { pendingModelFrames += 1 }
            if pendingModelFrames >= batch.width { out += try renderPending() }
        }
        if all || pendingModelFrames == 0 { out += try renderPending() }
        return out
    }

    private func needsModel(_ t: TrackedFrame) -> Bool {
        t.face != nil && context.outputFrames.contains(t.frame.index)
    }

    /// Runs the tracker, booking its time beyond detection and landmarks as `track`.
    private func track(_ body: () -> [TrackedFrame]) -> [TrackedFrame] {
        let before = (timings.seconds["detect"] ?? 0) + (timings.seconds["landmarks"] ?? 0)
        let t0 = Benchmark.now()
        let out = body()
        let spent = Benchmark.now() - t0
        let analysed = (timings.seconds["detect"] ?? 0) + (timings.seconds["landmarks"] ?? 0) - before
        timings.add("track", seconds: max(0, spent - analysed), frames: out.count)
        return out
    }

    /// Renders the queued frames: context frames and faceless frames unchanged, the others
    /// warped, run through the model together and blended back; in order.
    private func renderPending() throws -> [VideoFrame] {
        let queued = pending
        pending.removeAll(keepingCapacity: true)
        pendingModelFrames = 0
        var frames = queued.map(\.frame)
        var jobs: [(slot: Int, transform: SimilarityTransform, crop: FaceCrop, window: [Float])] = []
        let s = engine.model.model.config.imageSize
        for (slot, tracked) in queued.enumerated() {
            let frame = tracked.frame
            guard context.outputFrames.contains(frame.index) else { continue }
            counts.frames += 1
            guard let face = tracked.face else { continue }
            counts.framesWithFace += 1
            let inputs = try timings.measure("warp") {
                try ModelInputs.compute(frame: frame, face: face, cropSize: s, mel: mel, frameRate: context.frameRate)
            }
            modelInputsObserver?(frame.index, inputs)
            jobs.append((slot, inputs.transform, inputs.crop, inputs.melWindow))
        }
        if jobs.isEmpty { return frames }
        let results = try runModel(jobs.map(\.crop), melWindows: jobs.map(\.window))
        for (job, out) in zip(jobs, results) {
            _ = try timings.measure("blend") {
                try FaceWarp.paste(out, into: &frames[job.slot], transform: job.transform, mask: source == nil ? .lowerFace : .wholeFace)
            }
            if source != nil { counts.framesSwapped += 1 }
        }
        return frames
    }

    /// The model on crops of several frames: encode and quantize both halves, swap (with a
    /// source), lip sync the lower half with the frame's own lower half as reference (R = T),
    /// decode. Each step runs for all the crops at once, spread over the batch's contexts, and is
    /// timed as a whole (so a step's time is the wall time it took, shared out over the crops).
    private func runModel(_ crops: [FaceCrop], melWindows: [[Float]]) throws -> [FaceCrop] {
        let model = engine.model.model, c = model.config
        let batch = self.batch
        defer { batch.reset() }
        let s = c.imageSize, h = c.halfGrid.h, n = crops.count
        func step<T>(_ name: String, _ body: (Int, ComputeContext) throws -> T) throws -> [T] {
            try timings.measure(name, frames: n) { try batch.map(n, body) }
        }
        do {
            let images = (0..<n).map { i -> Tensor in
                let image = batch.context(forItem: i, of: n).workspace.tensor([3, s, s])
                ImageTensor.fill(image, from: crops[i])
                return image
            }
            let z = try step("encode") { i, ctx in
                (try model.encode(Shape.sliceHeight(images[i], from: 0, count: s / 2, ctx), ctx),
                 try model.encode(Shape.sliceHeight(images[i], from: s / 2, count: s / 2, ctx), ctx))
            }
            var grids = try step("quantize") { i, ctx in
                Shape.concatHeight([try model.quantize(z[i].0, half: .upper, ctx).quantized,
                                    try model.quantize(z[i].1, half: .lower, ctx).quantized], ctx)
            }
            if let source {
                grids = try step("swap") { i, ctx in try model.swap(target: grids[i], source: source, ctx) }
            }
            let audio = try step("audio-encoder") { i, ctx in
                // The mel window is bin-major 80 × 16; the model takes frame-major [16, 80].
                let m = ctx.workspace.zeros([c.melFrames, c.melBins])
                let frames = LogMel.windowFrames, bins = MelSpectrogram.melBins
                let window = melWindows[i]
                for t in 0..<min(frames, c.melFrames) {
                    for b in 0..<min(bins, c.melBins) { m.data[t * c.melBins + b] = window[b * frames + t] }
                }
                return try model.audio(mel: m, ctx)
            }
            let synced = try step("lipsync") { i, ctx in
                let lower = Shape.sliceHeight(grids[i], from: h, count: h, ctx)
                return try model.lipsync(target: lower, reference: lower, audio: audio[i], ctx)
            }
            let decoded = try step("decode") { i, ctx in
                try model.decode(Shape.concatHeight([Shape.sliceHeight(grids[i], from: 0, count: h, ctx), synced[i]], ctx), ctx)
            }
            return decoded.map { ImageTensor.crop(from: $0) }
        } catch let e as DubfarmError {
            throw e
        } catch {
            throw DubfarmError(.internalError, "dub model failed on \(n) \(s)×\(s) face crop(s): \(error)")
        }
    }
}
