import AudioFeatures
import DubfarmCore
import FaceAnalysis
import FarmProtocol
import FarmTestSupport
import Foundation
import Logging
import MediaPipeline
import Testing
import VQModel
import Worker
@testable import Dubbing

/// The shared test media (`TestMedia`, FarmTestSupport).
func media(_ name: String) -> String { TestMedia.path(name) }
var haveMedia: Bool {
    FileManager.default.fileExists(atPath: media("speaker-c.mp4"))
        && FileManager.default.fileExists(atPath: HaarCascade.defaultPath)
}

/// Loaded once for the whole suite (the landmark model takes over a second to read).
enum Shared {
    static let analyzer: FaceAnalyzer = { try! FaceAnalyzer.load() }()
    static let engine: DubEngine = {
        DubEngine(model: try! DubModel.untrained(config: "small"), analyzer: analyzer, logger: Logger(label: "dub-test"))
    }()
}

/// The first `count` frames of a video as rgb24, frame `black` replaced by a black frame.
func frames(_ name: String, count: Int, black: Int? = nil) throws -> [VideoFrame] {
    var out: [VideoFrame] = []
    try VideoDecoder.decodeFrames(path: media(name), layout: .rgb24) { f in
        guard out.count < count else { return }
        var f = f
        if f.index == black {
            f.planes[0] = [UInt8](repeating: 0, count: f.planes[0].count)
        }
        out.append(f)
    }
    return out
}

func context(decoded: Range<Int>, output: Range<Int>, face: [UInt8]?) throws -> StageContext {
    let pcm = try DubAudio.decodePCM(path: media("dub-1.wav"))
    // The window a task carries: the decoded frames' time plus margin, starting off the hop grid.
    let window = AudioWindow.slice(pcm: pcm, range: -1_234..<Int64(decoded.upperBound * 640 + 8_000))
    return StageContext(task: TaskRef(segment: SegmentRef(job: JobID(1), index: 0), token: .random()),
                        outputFrames: output, decodedFrames: decoded, frameRate: Rational(25, 1), audio: window,
                        sourceFace: face, threads: 2)
}

/// Runs a processor over `input` the way the segment renderer does.
func run(_ p: any FrameProcessor, _ input: [VideoFrame]) throws -> [VideoFrame] {
    var out: [VideoFrame] = []
    for f in input { out += try p.process(f) }
    out += try p.flush()
    return out
}

@Suite("Dub stage", .serialized, .enabled(if: haveMedia, "needs ../shared/media and the face models"))
struct DubProcessorTests {
    @Test("speaker-c, lip sync only: every frame back once in order; changes only inside the lower-face mask; a black frame passes through and is counted")
    func lipSyncOnly() throws {
        let black = 14
        let input = try frames("speaker-c.mp4", count: 30, black: black)
        let output = 4..<26
        let stage = DubStage(engine: Shared.engine)
        let ctx = try context(decoded: 0..<30, output: output, face: nil)
        let p = try stage.makeProcessor(for: ctx)
        let t0 = Date()
        let out = try run(p, input)
        let seconds = Date().timeIntervalSince(t0)
        #expect(out.map(\.index) == input.map(\.index))

        // The same trajectory from an independent tracker (the analysis is deterministic).
        let tracker = FaceTracker(analyzer: Shared.analyzer)
        var faces: [Int: TrackedFace] = [:]
        for t in tracker.push(input) { faces[t.frame.index] = t.face }
        for t in tracker.flush() { faces[t.frame.index] = t.face }

        let s = Shared.engine.model.model.config.imageSize
        var changedFrames = 0
        for (a, b) in zip(input, out) {
            guard output.contains(a.index), let face = faces[a.index] else {
                #expect(a.planes == b.planes, "frame \(a.index) (no face or context) must pass through unchanged")
                continue
            }
            let t = face.alignment.transform(cropSize: s)
            var changed = 0, outside = 0
            let w = a.width, stride = a.strides[0]
            for y in 0..<a.height {
                for x in 0..<w {
                    let o = y * stride + 3 * x
                    if a.planes[0][o] != b.planes[0][o] || a.planes[0][o + 1] != b.planes[0][o + 1] || a.planes[0][o + 2] != b.planes[0][o + 2] {
                        changed += 1
                        if FaceWarp.maskWeight(atFramePixel: x, y, transform: t, cropSize: s, mask: .lowerFace) <= 0 { outside += 1 }
                    }
                }
            }
            #expect(outside == 0, "frame \(a.index): \(outside) pixels changed outside the lower-face mask")
            if changed > 0 { changedFrames += 1 }
        }
        let stats = stage.statistics(of: p)
        let expectedWithFace = output.filter { faces[$0] != nil }.count
        #expect(faces[black] == nil, "the black frame must not get a face")
        #expect(stats.framesWithFace == expectedWithFace)
        #expect(stats.framesWithFace >= output.count - 1 - 1, "speaker-c shows a face in nearly every frame")
        #expect(stats.framesSwapped == 0)
        #expect(changedFrames == expectedWithFace, "every frame with a face is redrawn")
        let steps = stage.timings(of: p)
        #expect(Set(steps.map(\.step)).isSuperset(of: ["detect", "landmarks", "warp", "audio", "encode", "lipsync", "decode", "blend"]))
        #expect(!steps.contains { $0.step == "swap" })
        print("dub (small, lip sync only): \(input.count) frames in \(String(format: "%.2f", seconds)) s; "
              + steps.map { "\($0.step) \(String(format: "%.1f", $0.msPerFrame))" }.joined(separator: ", ") + " ms/frame")
    }

    @Test("speaker-c with a source face: swapped frames counted; changes only inside the whole-face mask; source encoded once per job")
    func withSourceFace() throws {
        let input = try frames("speaker-c.mp4", count: 14)
        let face = try [UInt8](Data(contentsOf: URL(fileURLWithPath: media("face-source.png"))))
        let stage = DubStage(engine: Shared.engine)
        let ctx = try context(decoded: 0..<14, output: 2..<12, face: face)
        let p = try stage.makeProcessor(for: ctx)
        let out = try run(p, input)
        #expect(out.map(\.index) == input.map(\.index))
        let stats = stage.statistics(of: p)
        #expect(stats.framesWithFace == 10)
        #expect(stats.framesSwapped == stats.framesWithFace)
        #expect(stage.timings(of: p).contains { $0.step == "swap" })

        let tracker = FaceTracker(analyzer: Shared.analyzer)
        var faces: [Int: TrackedFace] = [:]
        for t in tracker.push(input) + tracker.flush() { faces[t.frame.index] = t.face }
        let s = Shared.engine.model.model.config.imageSize
        for (a, b) in zip(input, out) {
            guard (2..<12).contains(a.index), let f = faces[a.index] else {
                #expect(a.planes == b.planes)
                continue
            }
            let t = f.alignment.transform(cropSize: s)
            var outside = 0
            for y in 0..<a.height {
                for x in 0..<a.width {
                    let o = y * a.strides[0] + 3 * x
                    if a.planes[0][o..<o + 3] != b.planes[0][o..<o + 3],
                       FaceWarp.maskWeight(atFramePixel: x, y, transform: t, cropSize: s, mask: .wholeFace) <= 0 { outside += 1 }
                }
            }
            #expect(outside == 0, "frame \(a.index): \(outside) pixels changed outside the whole-face mask")
        }

        // A second segment of the same job reuses the encoded source face.
        let encoded = Shared.engine.sourceEncodings
        _ = try stage.makeProcessor(for: ctx)
        #expect(Shared.engine.sourceEncodings == encoded, "the source face should come from the cache")
    }

    @Test("a rotated video is dubbed upright: its frames turned by the display rotation come out exactly as the upright frames do, turned back",
          arguments: [90, 180, 270])
    func rotatedIsDubbedUpright(degrees: Int) throws {
        let upright = try frames("speaker-c.mp4", count: 12)
        // As a phone stores it: the picture turned the other way, the rotation saying how to show it.
        let stored = upright.map { $0.rotated(by: -degrees) }
        let plain = try context(decoded: 0..<12, output: 2..<10, face: nil)
        var turned = plain
        turned.rotation = degrees
        let reference = try DubProcessor(engine: Shared.engine, context: plain, source: nil)
        let rotated = try DubProcessor(engine: Shared.engine, context: turned, source: nil)
        let expected = try run(reference, upright)
        let got = try run(rotated, stored)
        #expect(reference.counts.framesWithFace == 8 && rotated.counts == reference.counts)
        #expect(got.map(\.index) == expected.map(\.index))
        #expect(zip(got, expected).allSatisfy { $0.0.width == stored[0].width && $0.0.rotated(by: degrees).planes == $0.1.planes })
        #expect(zip(got, stored).contains { $0.0.planes != $0.1.planes }, "the dub changed nothing")
    }

    @Test("frames side by side on two threads: bit-identical frames, same order, counts and per-step frame counts as one thread")
    func framesInParallelMatchOneThread() throws {
        let input = try frames("speaker-c.mp4", count: 16, black: 7)
        let face = try [UInt8](Data(contentsOf: URL(fileURLWithPath: media("face-source.png"))))
        let two = try context(decoded: 0..<16, output: 3..<14, face: face)
        var one = two
        one.threads = 1
        let source = try Shared.engine.source(for: face, logger: Logger(label: "dub-test"))
        let parallel = try DubProcessor(engine: Shared.engine, context: two, source: source, mode: .framesInParallel)
        let serial = try DubProcessor(engine: Shared.engine, context: one, source: source)
        #expect(parallel.batch.width == 2 && serial.batch.width == 1)
        // frames come back as soon as a pair of model frames is ready, never out of order
        var got: [VideoFrame] = []
        var held = 0
        for f in input {
            got += try parallel.process(f)
            held = max(held, f.index + 1 - got.count)
        }
        got += try parallel.flush()
        let want = try run(serial, input)
        #expect(got.map(\.index) == input.map(\.index))
        #expect(want.map(\.index) == input.map(\.index))
        for (a, b) in zip(got, want) { #expect(a.planes == b.planes, "frame \(a.index) differs between 2 frames side by side and 1 thread") }
        #expect(parallel.counts == serial.counts)
        #expect(parallel.counts.framesSwapped >= 9)
        for step in ["encode", "quantize", "swap", "audio-encoder", "lipsync", "decode", "warp", "blend"] {
            #expect(parallel.timings.frames[step] == serial.timings.frames[step], "\(step) frame count")
        }
        let serialHeld = try { () throws -> Int in
            let p = try DubProcessor(engine: Shared.engine, context: one, source: source)
            var n = 0, m = 0
            for f in input { n += try p.process(f).count; m = max(m, f.index + 1 - n) }
            return m
        }()
        // a model frame waits for the next one (and the frames between them, here at most the black
        // frame), and the tracking thread may be up to its queue and the frame in hand behind
        let bound = serialHeld + 2 + DubProcessor.trackingQueue + 1
        #expect(held <= bound, "batching two frames and tracking on a thread of its own hold at most \(bound - serialHeld) more frames back (\(held) vs \(serialHeld))")
    }

    /// Issue 3's "worker memory independent of video length", in process: a segment's frames
    /// in flight are bounded by the tracker's window, one batch and the tracking thread's queue, and the model's scratch
    /// memory after 48 frames is what it was after 12 (the worker-level figure, a real worker's
    /// peak RSS over a short and a long video, is `tools/bench/memory.sh`).
    @Test("memory does not grow with the number of frames: frames held back and model scratch are the same for 12 and 48 frames")
    func memoryDoesNotGrowWithFrames() throws {
        let all = try frames("speaker-c.mp4", count: 48)
        var held: [Int] = [], reserved: [Int] = []
        for count in [12, 48] {
            let input = Array(all.prefix(count))
            let p = try DubProcessor(engine: Shared.engine, context: try context(decoded: 0..<count, output: 0..<count, face: nil),
                                     source: nil, mode: .framesInParallel)
            var returned = 0, most = 0
            for f in input {
                returned += try p.process(f).count
                most = max(most, f.index + 1 - returned)
            }
            returned += try p.flush().count
            #expect(returned == count)
            #expect(p.counts.framesWithFace >= count / 2, "the model must run for this to mean anything")
            held.append(most)
            reserved.append(p.batch.reservedBytes)
        }
        // the tracker's window, one batch, the tracking thread's queue and the frame it works on
        let bound = Shared.engine.trackerParameters.latency + 2 + 1 + DubProcessor.trackingQueue + 1
        #expect(held.allSatisfy { $0 <= bound }, "frames held back \(held), bound \(bound)")
        #expect(reserved[0] == reserved[1] && reserved[0] > 0, "model scratch bytes after 12 and 48 frames: \(reserved)")
    }

    @Test("a source image without a face fails the segment with a clear error")
    func sourceWithoutFace() throws {
        // A grey PNG made by FFmpeg's own tools is not available everywhere: use a black frame of the video.
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dub-noface-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let png = dir.appendingPathComponent("flat.png")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/ffmpeg")
        p.arguments = ["-v", "error", "-f", "lavfi", "-i", "color=c=gray:s=320x320", "-frames:v", "1", png.path]
        guard (try? p.run()) != nil else { return }
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { return }
        let stage = DubStage(engine: Shared.engine)
        let ctx = try context(decoded: 0..<4, output: 0..<4, face: try [UInt8](Data(contentsOf: png)))
        do {
            _ = try stage.makeProcessor(for: ctx)
            Issue.record("a source image without a face must fail the segment")
        } catch let e as DubfarmError {
            #expect(e.code == .badInput)
            #expect(e.message.contains("no face"), "\(e.message)")
        }
    }

    @Test("mel of a task window off the hop grid (negative start) matches the whole track's mel")
    func melAlignment() throws {
        let pcm = try DubAudio.decodePCM(path: media("dub-1.wav"))
        let whole = MelSpectrogram().compute(pcm)
        let window = AudioWindow.slice(pcm: pcm, range: -1_234..<40_000)
        let mel = DubProcessor.logMel(window)
        #expect(mel.firstFrame * MelSpectrogram.hopLength >= -1_234)
        // Away from the window's ends (reflect padding), frames equal the whole track's.
        for frame in 10..<150 {
            for bin in stride(from: 0, to: 80, by: 7) {
                #expect(abs(mel.value(frame: frame, bin: bin) - whole.value(frame: frame, bin: bin)) < 1e-4)
            }
        }
    }
}

extension FaceTracker {
    func push(_ frames: [VideoFrame]) -> [TrackedFrame] { frames.flatMap { push($0) } }
}
