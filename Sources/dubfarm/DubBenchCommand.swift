import ArgumentParser
import Dubbing
import DubfarmCore
import FaceAnalysis
import FarmProtocol
import Foundation
import Logging
import MediaPipeline
import Worker

/// `dubfarm bench dub`: one segment through the dub stage exactly as a worker renders it (cut,
/// decode, track, model, blend, encode), with milliseconds per frame of every step.
struct DubBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dub", abstract: "Per-step milliseconds per frame and frames per second of the dub stage on one segment.")
    @Option(name: .long, help: "Seeded UNTRAINED weights of this configuration (tiny, small, paper); the same as --model untrained:CONFIG.") var config: String?
    @Option(name: .long, help: "Weights directory or untrained:CONFIG. Default: $DUBFARM_MODEL, else the bundled trained models/dubfarm-small.") var model: String?
    @Option(name: .long, help: "Input video.") var video: String
    @Option(name: .long, help: "Dub track.") var audio: String
    @Option(name: .long, help: "Source face image (omit for lip sync only).") var face: String?
    @Option(name: .long, help: "Frames in the segment.") var frames: Int = 100
    @Option(name: .long, help: "Context frames on each side.") var context: Int = 8
    @Option(name: .long, help: "Worker threads.") var threads: Int = 2
    @Flag(name: .long, help: "Print one JSON line.") var json = false

    func run() throws {
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        let dubModel = try DubModel.load(resolveDubModel(model ?? config.map { "untrained:\($0)" }).spec)
        let engine = DubEngine(model: dubModel, analyzer: try FaceAnalyzer.load(), logger: logger)
        let stage = DubStage(engine: engine)

        let indexed = try SourceIndexer.index(path: video)
        let source = try SourceVideo(path: video, codec: indexed.codec, index: indexed.index)
        let info = indexed.info
        let n = min(frames, indexed.index.frameCount - 2 * context)
        guard n > 0 else { throw DubfarmError(.badInput, "\(video): too short for \(frames) frames with \(context) context frames") }
        let output = context..<(context + n)
        let (bundle, window) = try SegmentCutter.cut(source, frames: output, context: context)
        let pcm = try DubAudio.decodePCM(path: audio)
        let rate = info.frameRate
        func sample(_ f: Int) -> Int64 { Int64(f) * Int64(AudioWindow.sampleRate) * Int64(rate.den) / Int64(rate.num) }
        let audioWindow = AudioWindow.slice(pcm: pcm, range: (sample(window.decodedFrames.lowerBound) - 4_000)..<(sample(window.decodedFrames.upperBound) + 4_000))
        let faceBytes = try face.map { try [UInt8](Data(contentsOf: URL(fileURLWithPath: $0))) }
        let ctx = StageContext(task: TaskRef(segment: SegmentRef(job: JobID(1), index: 0), token: .random()),
                               outputFrames: output, decodedFrames: window.decodedFrames, frameRate: rate, audio: audioWindow,
                               sourceFace: faceBytes, threads: threads)
        // The source face is encoded once per job: do it before the clock starts, as for a job's later segments.
        _ = try stage.makeProcessor(for: ctx)
        let processor = try stage.makeProcessor(for: ctx)
        let timed = TimedProcessor(processor)
        let t0 = Date()
        _ = try SegmentRenderer.render(input: bundle, window: window, outputFrames: output, frameRate: rate,
                                       encoder: EncoderSettings(), layout: stage.layout, processor: timed, threads: threads)
        let total = Date().timeIntervalSince(t0)
        var steps = stage.timings(of: processor)
        let videoMs = 1000 * max(0, total - timed.seconds) / Double(n)
        steps.append((step: "video decode+encode", msPerFrame: videoMs))
        let fps = Double(n) / total
        let counts = stage.statistics(of: processor)
        let tracking = (processor as? DubProcessor)?.trackingStats
        if json {
            var fields = steps.map { "\"\($0.step)\": \(String(format: "%.2f", $0.msPerFrame))" }
            if let tracking {
                fields += ["\"detector_runs\": \(tracking.detectorRuns)", "\"followed\": \(tracking.followedFrames)"]
            }
            fields += ["\"config\": \"\(dubModel.model.config.name)\"", "\"frames\": \(n)", "\"threads\": \(threads)",
                       "\"fps\": \(String(format: "%.2f", fps))", "\"with_face\": \(counts.framesWithFace)"]
            print("{" + fields.joined(separator: ", ") + "}")
            return
        }
        print("dub \(dubModel.id) (\(dubModel.model.config.imageSize)px crop), \(URL(fileURLWithPath: video).lastPathComponent), "
              + "\(n) frames (+\(window.decodedFrames.count - n) context), \(threads) threads, "
              + (faceBytes == nil ? "lip sync only" : "swap + lip sync") + ", \(counts.framesWithFace) frames with a face")
        if let t = tracking {
            print("  face tracking over \(t.frames) decoded frames: detector on \(t.detectorRuns), followed from the frame before on \(t.followedFrames)")
        }
        func pad(_ s: String) -> String { s.padding(toLength: 20, withPad: " ", startingAt: 0) }
        for s in steps { print("  \(pad(s.step)) \(String(format: "%8.2f", s.msPerFrame)) ms/frame") }
        print("  \(pad("total")) \(String(format: "%8.2f", 1000 * total / Double(n))) ms/frame  ->  \(String(format: "%.2f", fps)) frames/s per worker")
        if threads > 1 {
            print("  (with \(threads) threads, face tracking and video decoding/encoding run beside the model, so the steps add up to more"
                  + " than the total; 'video decode+encode' is the time not hidden behind the stage)")
        }
    }
}

/// Measures the time a processor spends (the rest of a render is video decode and encode).
final class TimedProcessor: FrameProcessor {
    let inner: any FrameProcessor
    private(set) var seconds = 0.0
    init(_ inner: any FrameProcessor) { self.inner = inner }
    func process(_ frame: VideoFrame) throws -> [VideoFrame] {
        let t = Date()
        defer { seconds += Date().timeIntervalSince(t) }
        return try inner.process(frame)
    }
    func flush() throws -> [VideoFrame] {
        let t = Date()
        defer { seconds += Date().timeIntervalSince(t) }
        return try inner.flush()
    }
}
