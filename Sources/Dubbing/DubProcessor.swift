import AudioFeatures
import DubfarmCore
import Engine
import FaceAnalysis
import Foundation
import VQModel
import Worker

/// Frames counted by a ``DubProcessor`` over its segment's output frames (context frames excluded).
public struct DubCounts: Sendable, Hashable {
    public var frames = 0
    public var framesWithFace = 0
    public var framesSwapped = 0
    public init() {}
}

/// One segment of the dub stage. Frames come back in order, each exactly once, ``FaceTracker``'s
/// latency later; memory is the tracker's window plus the model's scratch workspace.
public final class DubProcessor: FrameProcessor {
    let engine: DubEngine
    let context: StageContext
    let source: SwapSource?
    let ctx: ComputeContext
    let mel: LogMel
    private var tracker: FaceTracker!
    public private(set) var counts = DubCounts()
    public private(set) var timings = DubTimings()

    /// A processor for one segment; `source` is the job's encoded source face (nil: lip sync only).
    public init(engine: DubEngine, context: StageContext, source: SwapSource?) throws {
        guard context.frameRate.num > 0, context.frameRate.den > 0 else {
            throw DubfarmError(.badInput, "dub stage: unusable frame rate \(context.frameRate)")
        }
        self.engine = engine
        self.context = context
        self.source = source
        self.ctx = ComputeContext(threads: context.threads)
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

    /// The log-mel frames of a task's audio window. The window's start is moved up to the next
    /// multiple of the hop so frame numbers stay on the track's grid.
    static func logMel(_ audio: AudioWindow) -> LogMel {
        let hop = Int64(MelSpectrogram.hopLength)
        let r = ((audio.startSample % hop) + hop) % hop
        let skip = Int(r == 0 ? 0 : hop - r)
        let samples = skip < audio.samples.count ? Array(audio.samples[skip...]) : []
        return MelSpectrogram().compute(samples, firstSample: Int(audio.startSample) + skip)
    }

    public func process(_ frame: VideoFrame) throws -> [VideoFrame] {
        try track { tracker.push(frame) }.map(render)
    }

    public func flush() throws -> [VideoFrame] {
        try track { tracker.flush() }.map(render)
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

    /// One frame: context frames and faceless frames unchanged, others through the model.
    private func render(_ tracked: TrackedFrame) throws -> VideoFrame {
        var frame = tracked.frame
        guard context.outputFrames.contains(frame.index) else { return frame }
        counts.frames += 1
        guard let face = tracked.face else { return frame }
        counts.framesWithFace += 1
        let config = engine.model.model.config
        let s = config.imageSize
        let transform = face.alignment.transform(cropSize: s)
        let crop = try timings.measure("warp") { try FaceWarp.crop(frame, transform: transform, size: s) }
        let window = mel.melWindow(forFrame: frame.index, frameRateNum: context.frameRate.num, den: context.frameRate.den)
        let out = try runModel(crop, melWindow: window)
        _ = try timings.measure("blend") {
            try FaceWarp.paste(out, into: &frame, transform: transform, mask: source == nil ? .lowerFace : .wholeFace)
        }
        if source != nil { counts.framesSwapped += 1 }
        return frame
    }

    /// The model on one crop: encode and quantize both halves, swap (with a source), lip sync the
    /// lower half with the frame's own lower half as reference (R = T), decode.
    private func runModel(_ crop: FaceCrop, melWindow: [Float]) throws -> FaceCrop {
        let model = engine.model.model, c = model.config
        let ws = ctx.workspace
        defer { ws.reset() }
        let s = c.imageSize, h = c.halfGrid.h
        do {
            let image = ws.tensor([3, s, s])
            ImageTensor.fill(image, from: crop)
            let (zu, zl) = try timings.measure("encode") {
                (try model.encode(Shape.sliceHeight(image, from: 0, count: s / 2, ctx), ctx),
                 try model.encode(Shape.sliceHeight(image, from: s / 2, count: s / 2, ctx), ctx))
            }
            var grid = try timings.measure("quantize") {
                Shape.concatHeight([try model.quantize(zu, half: .upper, ctx).quantized,
                                    try model.quantize(zl, half: .lower, ctx).quantized], ctx)
            }
            if let source {
                grid = try timings.measure("swap") { try model.swap(target: grid, source: source, ctx) }
            }
            let audio = try timings.measure("audio-encoder") {
                // The mel window is bin-major 80 × 16; the model takes frame-major [16, 80].
                let m = ws.zeros([c.melFrames, c.melBins])
                let frames = LogMel.windowFrames, bins = MelSpectrogram.melBins
                for t in 0..<min(frames, c.melFrames) {
                    for b in 0..<min(bins, c.melBins) { m.data[t * c.melBins + b] = melWindow[b * frames + t] }
                }
                return try model.audio(mel: m, ctx)
            }
            let lower = Shape.sliceHeight(grid, from: h, count: h, ctx)
            let synced = try timings.measure("lipsync") { try model.lipsync(target: lower, reference: lower, audio: audio, ctx) }
            let joined = Shape.concatHeight([Shape.sliceHeight(grid, from: 0, count: h, ctx), synced], ctx)
            let image2 = try timings.measure("decode") { try model.decode(joined, ctx) }
            return ImageTensor.crop(from: image2)
        } catch let e as DubfarmError {
            throw e
        } catch {
            throw DubfarmError(.internalError, "dub model failed on a \(s)×\(s) face crop: \(error)")
        }
    }
}
