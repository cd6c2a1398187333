import AudioFeatures
import DubfarmCore
import Engine
import FaceAnalysis
import Foundation
import Synchronization
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
/// later. Each frame's result is exactly the single-threaded model's for that frame. With several
/// threads the face tracker also runs on a thread of its own, a few frames ahead of the model.
package final class DubProcessor: FrameProcessor {
    let engine: DubEngine
    let context: StageContext
    let source: SwapSource?
    let batch: FrameBatch
    let mel: LogMel
    /// Tracked frames not yet handed back, in order, and how many of them need the model.
    private var pending: [TrackedFrame] = []
    private var pendingModelFrames = 0
    /// The face tracker, on a thread of its own when the context has more than one: it looks
    /// for the faces of the next frames while the model runs on the current ones.
    private let tracking: OffThreadStage<VideoFrame, TrackedFrame>
    /// Frames that may wait for the tracking thread: with it, a processor holds up to this many
    /// frames (and the one being tracked) beyond the tracker's latency and the model's batch.
    package static let trackingQueue = 4
    /// Detection, landmarks and tracking time and counts, booked on the tracking thread.
    private let tracked: TrackingLedger
    private var renderTimings = DubTimings()
    package private(set) var counts = DubCounts()
    /// Time spent in each step (tracking and rendering may overlap: their sum exceeds wall time).
    package var timings: DubTimings { renderTimings + tracked.timings }
    /// The face tracker's counts over the frames it has handed back (context frames included).
    package var trackingStats: FaceTrackingStats { tracked.stats }

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
        self.renderTimings = t
        let analyzer = engine.analyzer, parameters = engine.trackerParameters
        let ledger = TrackingLedger()
        self.tracked = ledger
        tracking = try OffThreadStage(name: "face-tracking", capacity: Self.trackingQueue, inline: context.threads <= 1) {
            var timings = DubTimings()
            // Detection, landmarks and following timed apart; the same analysis as
            // FaceTracker(analyzer:parameters:). Every step counts every frame, so its figure is
            // milliseconds per decoded frame whether it ran on that frame or not.
            let follow = FaceTracker.following(analyzer, parameters)
            let tracker = FaceTracker(analyzer: analyzer, parameters: parameters, follow: { frame, previous in
                timings.measure("follow", frames: 0) { follow(frame, previous) }
            }, observe: { frame, near in
                guard let best = timings.measure("detect", frames: 0, { analyzer.detectFace(frame, near: near) }) else { return nil }
                return timings.measure("landmarks", frames: 0) { analyzer.observe(frame, detectorBox: best.box, neighbors: best.neighbors) }
            })
            /// Runs the tracker on `frames` new frames, booking its time beyond the analysis as `track`.
            func track(frames: Int, _ body: () -> [TrackedFrame]) -> [TrackedFrame] {
                timings = DubTimings()
                let t0 = Benchmark.now()
                let out = body()
                let spent = Benchmark.now() - t0
                let analysed = ["detect", "landmarks", "follow"].reduce(0) { $0 + (timings.seconds[$1] ?? 0) }
                timings.add("track", seconds: max(0, spent - analysed), frames: frames)
                for step in ["detect", "landmarks", "follow"] { timings.add(step, seconds: 0, frames: frames) }
                ledger.add(timings, stats: tracker.stats)
                return out
            }
            return .init(process: { frame in track(frames: 1) { tracker.push(frame) } }, finish: { track(frames: 0) { tracker.flush() } })
        }
    }

    deinit { tracking.cancel() }

    /// The log-mel frames of a task's audio window (``ModelInputs/logMel(_:)``).
    static func logMel(_ audio: AudioWindow) -> LogMel { ModelInputs.logMel(audio) }

    /// Called with each frame's index and model inputs just before the model runs (tests: the
    /// dataset builder's crops and mel windows are compared with these).
    var modelInputsObserver: ((Int, ModelInputs) -> Void)?

    package func process(_ frame: VideoFrame) throws -> [VideoFrame] {
        // Faces are looked for, and the model run, in the picture as a player shows it; the
        // frame goes back in the input's own orientation (the output keeps the rotation).
        let upright = context.rotation == 0 ? frame : frame.rotated(by: context.rotation)
        try tracking.put(upright)
        return try turnedBack(release(tracking.takeAvailable(), all: false))
    }

    package func flush() throws -> [VideoFrame] {
        try turnedBack(release(tracking.finish(), all: true))
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
            let inputs = try renderTimings.measure("warp") {
                try ModelInputs.compute(frame: frame, face: face, cropSize: s, mel: mel, frameRate: context.frameRate)
            }
            modelInputsObserver?(frame.index, inputs)
            jobs.append((slot, inputs.transform, inputs.crop, inputs.melWindow))
        }
        if jobs.isEmpty { return frames }
        let results = try runModel(jobs.map(\.crop), melWindows: jobs.map(\.window))
        for (job, out) in zip(jobs, results) {
            _ = try renderTimings.measure("blend") {
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
            try renderTimings.measure(name, frames: n) { try batch.map(n, body) }
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

/// What the face-tracking thread reports: its steps' times and the tracker's counts.
final class TrackingLedger: Sendable {
    private let state = Mutex((timings: DubTimings(), stats: FaceTrackingStats()))
    func add(_ t: DubTimings, stats: FaceTrackingStats) {
        state.withLock {
            $0.timings = $0.timings + t
            $0.stats = stats
        }
    }
    var timings: DubTimings { state.withLock { $0.timings } }
    var stats: FaceTrackingStats { state.withLock { $0.stats } }
}
