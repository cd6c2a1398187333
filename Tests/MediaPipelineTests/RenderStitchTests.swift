import FarmTestSupport
import Foundation
import Testing
import DubfarmCore
import DurableFiles
import MediaPipeline

@Suite(.enabled(if: TestMedia.available, TestMedia.skipReason))
struct RenderStitchTests {
    static let settings = EncoderSettings(codec: "libx264", crf: 23, preset: "superfast", pixelFormat: "yuv420p")

    /// Cuts `file` into segments like the coordinator, renders each like a worker (passthrough)
    /// and writes the results as segment files.
    func renderAll(_ file: String, segmentFrames: Int, into dir: String,
                   layout: VideoFrame.Layout = .yuv420p) throws -> (paths: [String], bundles: [PacketBundle], info: VideoStreamInfo) {
        let source = try SourceVideo(path: TestMedia.path(file))
        let info = try #require(source.info)
        var paths: [String] = []
        var bundles: [PacketBundle] = []
        for span in SegmentPlanner.plan(frameCount: info.frameCount, segmentFrames: segmentFrames) {
            let (input, window) = try SegmentCutter.cut(source, frames: span.frames, context: 3)
            // The task crosses the wire: round-trip the bundle through its byte encoding.
            let received = try PacketBundle(decoding: input.encoded())
            var reported = 0
            let out = try SegmentRenderer.render(input: received, window: window, outputFrames: span.frames,
                                                 frameRate: info.frameRate, encoder: Self.settings, layout: layout,
                                                 processor: PassthroughProcessor(), threads: 2) { reported = $0 }
            #expect(reported == span.frames.count)
            let path = "\(dir)/seg-\(span.index).dfpb"
            try MediaFile.writeAtomically(out.encoded(), to: path)
            paths.append(path)
            bundles.append(out)
        }
        return (paths, bundles, info)
    }

    @Test func renderAndStitchLong() throws {
        let dir = try TestMedia.scratch("long")
        defer { TestMedia.cleanup(dir) }
        let (paths, bundles, info) = try renderAll("speaker-long.mp4", segmentFrames: 250, into: dir)
        #expect(bundles.map(\.packets.count) == [250, 250, 129])
        var start = 0
        for b in bundles {
            #expect(b.codec.timeBase == Rational(1, 25) && b.codec.frameRate == Rational(25, 1))
            #expect(b.packets.first?.isKey == true)
            #expect(b.packets.map(\.pts).sorted() == (start..<(start + b.packets.count)).map(Int64.init))
            #expect(!b.codec.extradata.isEmpty)
            #expect(b.codec == bundles[0].codec, "segments must be encoded identically")
            #expect(b.packets.contains { $0.dts < $0.pts }, "B-frames (reordering) are exercised")
            start += b.packets.count
        }

        let output = "\(dir)/out.mp4"
        let report = try Stitcher.stitch(StitchRequest(segmentPaths: paths, audioPath: TestMedia.path("dub-long.wav"),
                                                       outputPath: output, expectedFrameCount: info.frameCount,
                                                       frameRate: info.frameRate, rotation: info.rotation))
        #expect(report.framesWritten == 629)
        #expect(abs(report.videoDuration - 25.16) < 1e-9)
        #expect(abs(report.audioDuration - 25.16) < 1e-9)
        guard case .padded(let s) = report.audioFit else { Issue.record("expected padding, got \(String(describing: report.audioFit))"); return }
        #expect(abs(s - 0.16) < 0.002)
        #expect(report.bytes > 0)

        let probed = try MediaProbe.probe(path: output)
        let v = try #require(probed.video)
        #expect(v.frameCount == 629 && v.frameRate == Rational(25, 1))
        let a = try #require(probed.audio)
        #expect(a.codecName == "aac" && a.sampleRate == 48_000 && a.channels == 2)
        #expect(abs((a.duration ?? 0) - v.duration) <= 0.04, "audio \(a.duration ?? -1) s vs video \(v.duration) s")
        if let n = try TestMedia.ffprobeVideoPackets(output) { #expect(n == 629) }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.contains(".tmp-") }.isEmpty)

        // The stitched file decodes to exactly 629 frames.
        #expect(try VideoDecoder.decodeFrames(path: output, layout: .yuv420p, threads: 2) { _ in } == 629)
    }

    @Test func containerLongerThanVideoAndTrimmedDub() throws {
        let dir = try TestMedia.scratch("a")
        defer { TestMedia.cleanup(dir) }
        let (paths, bundles, info) = try renderAll("speaker-a.mp4", segmentFrames: 60, into: dir, layout: .rgb24)
        #expect(bundles.map(\.packets.count) == [60, 60, 15])
        let output = "\(dir)/a.mp4"
        let report = try Stitcher.stitch(StitchRequest(segmentPaths: paths, audioPath: TestMedia.path("dub-1.wav"),
                                                       outputPath: output, expectedFrameCount: 135, frameRate: info.frameRate))
        #expect(report.framesWritten == 135)
        guard case .trimmed(let s) = report.audioFit else { Issue.record("expected trimming, got \(String(describing: report.audioFit))"); return }
        #expect(abs(s - (5.0155 - 4.5)) < 0.01)
        let probed = try MediaProbe.probe(path: output)
        #expect(probed.video?.frameCount == 135 && probed.video?.frameRate == Rational(30, 1))
        #expect(abs((probed.audio?.duration ?? 0) - 4.5) <= 1.0 / 30)
        if let n = try TestMedia.ffprobeVideoPackets(output) { #expect(n == 135) }
    }

    @Test func stitchRefusesBadSegments() throws {
        let dir = try TestMedia.scratch("refuse")
        defer { TestMedia.cleanup(dir) }
        let (paths, _, info) = try renderAll("speaker-c.mp4", segmentFrames: 50, into: dir)
        let output = "\(dir)/c.mp4"
        func expectStitchError(_ req: StitchRequest, _ what: String) {
            do {
                _ = try Stitcher.stitch(req)
                Issue.record("stitch should fail: \(what)")
            } catch let e as DubfarmError {
                #expect(e.code == .stitch, "\(what): \(e.message)")
                #expect(e.message.contains("c.mp4"))
            } catch { Issue.record("\(error)") }
            #expect(!FileManager.default.fileExists(atPath: output))
            #expect((try? FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.contains(".tmp-") }.isEmpty) == true)
        }
        let base = StitchRequest(segmentPaths: paths, audioPath: TestMedia.path("dub-2.wav"), outputPath: output,
                                 expectedFrameCount: info.frameCount, frameRate: info.frameRate)
        var wrongCount = base
        wrongCount.expectedFrameCount = 126
        expectStitchError(wrongCount, "wrong frame count")
        var gap = base
        gap.segmentPaths = [paths[0], paths[2]]
        gap.expectedFrameCount = 100
        expectStitchError(gap, "missing segment")

        // A segment encoded with other settings (different SPS/PPS) is refused.
        let source = try SourceVideo(path: TestMedia.path("speaker-c.mp4"))
        let (input, window) = try SegmentCutter.cut(source, frames: 50..<100, context: 0)
        let odd = try SegmentRenderer.render(input: input, window: window, outputFrames: 50..<100, frameRate: info.frameRate,
                                             encoder: EncoderSettings(crf: 23, preset: "ultrafast"), layout: .yuv420p,
                                             processor: PassthroughProcessor(), threads: 2)
        try MediaFile.writeAtomically(odd.encoded(), to: "\(dir)/odd.dfpb")
        var mixed = base
        mixed.segmentPaths = [paths[0], "\(dir)/odd.dfpb", paths[2]]
        expectStitchError(mixed, "mixed encoder settings")

        // The good request succeeds: dub-2 (5.013 s) is trimmed to 5.0 s.
        let report = try Stitcher.stitch(base)
        #expect(report.framesWritten == 125)
        if case .trimmed = report.audioFit {} else { Issue.record("expected trimming, got \(String(describing: report.audioFit))") }

        // A mono 22.05 kHz dub exactly as long as the video: fitted exactly, upmixed to stereo 48 kHz.
        if let ffmpeg = TestMedia.tool("ffmpeg") {
            let dub = "\(dir)/exact.wav"
            try TestMedia.run(ffmpeg, ["-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=22050:duration=5", "-ac", "1", dub])
            var exact = base
            exact.audioPath = dub
            exact.outputPath = "\(dir)/exact.mp4"
            let r = try Stitcher.stitch(exact)
            #expect(r.audioFit == .exact)
            let a = try MediaProbe.probe(path: exact.outputPath).audio
            #expect(a?.channels == 2 && a?.sampleRate == 48_000)
        }
    }

    /// Whether Annex B `data` holds a NAL unit of `type` (7: SPS, 5: IDR slice).
    static func hasNAL(_ data: [UInt8], type: UInt8) -> Bool {
        var i = 0
        while i + 3 < data.count {
            if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
                if data[i + 3] & 0x1f == type { return true }
                i += 3
            } else {
                i += 1
            }
        }
        return false
    }

    @Test func segmentsStartWithIDRAndInBandHeaders() throws {
        let source = try SourceVideo(path: TestMedia.path("speaker-c.mp4"))
        let (input, window) = try SegmentCutter.cut(source, frames: 60..<80, context: 2)
        let out = try SegmentRenderer.render(input: input, window: window, outputFrames: 60..<80, frameRate: Rational(25, 1),
                                             encoder: Self.settings, layout: .yuv420p, processor: PassthroughProcessor(), threads: 1)
        let first = try #require(out.packets.first)
        #expect(first.isKey && first.pts == 60 && Self.hasNAL(first.data, type: 5), "first packet must be an IDR")
        #expect(Self.hasNAL(first.data, type: 7), "SPS in-band")
        #expect(Self.hasNAL(out.codec.extradata, type: 7), "SPS in the extradata")
        #expect(out.packets.dropFirst().allSatisfy { !$0.isKey || $0.pts > 60 })
        // Workers with other thread counts produce stitchable segments (identical codec parameters).
        let threaded = try SegmentRenderer.render(input: input, window: window, outputFrames: 60..<80, frameRate: Rational(25, 1),
                                                  encoder: Self.settings, layout: .yuv420p, processor: PassthroughProcessor(), threads: 3)
        #expect(threaded.codec == out.codec)
        #expect(threaded.packets.count == 20)
    }

    @Test func rotationIsKept() throws {
        guard let ffmpeg = TestMedia.tool("ffmpeg") else { return }
        let dir = try TestMedia.scratch("rot")
        defer { TestMedia.cleanup(dir) }
        let rotated = "\(dir)/rotated.mp4"
        try TestMedia.run(ffmpeg, ["-v", "error", "-i", TestMedia.path("speaker-c.mp4"), "-c", "copy", "-metadata:s:v:0", "rotate=90", rotated])
        let source = try SourceVideo(path: rotated)
        let info = try #require(source.info)
        #expect(info.rotation == 90)
        #expect(try MediaProbe.probe(path: rotated).video?.rotation == 90)
        let (input, window) = try SegmentCutter.cut(source, frames: 0..<125, context: 0)
        let seg = try SegmentRenderer.render(input: input, window: window, outputFrames: 0..<125, frameRate: info.frameRate,
                                             encoder: EncoderSettings(crf: 30, preset: "ultrafast"), layout: .yuv420p,
                                             processor: PassthroughProcessor(), threads: 2)
        try MediaFile.writeAtomically(seg.encoded(), to: "\(dir)/0.dfpb")
        let out = "\(dir)/out.mp4"
        _ = try Stitcher.stitch(StitchRequest(segmentPaths: ["\(dir)/0.dfpb"], audioPath: nil, outputPath: out,
                                              expectedFrameCount: 125, frameRate: info.frameRate, rotation: info.rotation))
        let probed = try MediaProbe.probe(path: out)
        #expect(probed.video?.rotation == 90)
        #expect(probed.video?.frameCount == 125)
        #expect(probed.audio == nil)
    }

    @Test("a frame turned by the probed rotation is the picture a player shows (ffmpeg's own auto-rotation)", arguments: [90, 180, 270])
    func uprightMatchesFFmpeg(degrees: Int) throws {
        guard let ffmpeg = TestMedia.tool("ffmpeg") else { return }
        let dir = try TestMedia.scratch("upright")
        defer { TestMedia.cleanup(dir) }
        let rotated = "\(dir)/rotated.mp4", shown = "\(dir)/shown.rgb"
        try TestMedia.run(ffmpeg, ["-v", "error", "-i", TestMedia.path("speaker-c.mp4"), "-c", "copy", "-metadata:s:v:0", "rotate=\(degrees)", rotated])
        try TestMedia.run(ffmpeg, ["-v", "error", "-i", rotated, "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", shown])
        let player = [UInt8](try Data(contentsOf: URL(fileURLWithPath: shown)))
        let rotation = try #require(MediaProbe.probe(path: rotated).video?.rotation)
        let raw = try #require(TestMedia.frames(rotated).first)
        // The same decoder and nearly the same colour conversion: only the right turn is close.
        func difference(_ turn: Int) -> Double {
            let f = raw.rotated(by: turn)
            guard f.planes[0].count == player.count else { return .infinity }
            return Double(zip(f.planes[0], player).reduce(0) { $0 + abs(Int($1.0) - Int($1.1)) }) / Double(player.count)
        }
        #expect(difference(rotation) < 3, "rotation \(rotation)°: \(difference(rotation))")
        for other in [0, 90, 180, 270] where other != rotation {
            #expect(difference(other) > 10, "turning by \(other)° also matches (\(difference(other)))")
        }
    }

    @Test("stopped early: the frames finished so far as a segment of their own; the rest, rendered as a new segment, stitches frame-exact")
    func stoppedEarlyThenRemainder() throws {
        let dir = try TestMedia.scratch("partial")
        defer { TestMedia.cleanup(dir) }
        let source = try SourceVideo(path: TestMedia.path("speaker-long.mp4"))
        let info = try #require(source.info)
        func render(_ frames: Range<Int>, stopAfter staged: Int? = nil) throws -> PacketBundle {
            let (input, window) = try SegmentCutter.cut(source, frames: frames, context: 3)
            var seen = 0
            return try SegmentRenderer.render(input: input, framePTS: window.framePTS, decodedFrames: window.decodedFrames,
                                              outputFrames: frames, frameRate: info.frameRate, encoder: Self.settings,
                                              layout: .yuv420p, processor: PassthroughProcessor(), threads: 2,
                                              stopEarly: {
                                                  seen += 1
                                                  return staged.map { seen > $0 } ?? false
                                              })
        }
        // Segment 0..<250 (no context before frame 0) stops once 100 frames have gone to the stage.
        let partial = try render(0..<250, stopAfter: 100)
        #expect(partial.packets.count == 100)
        #expect(partial.packets.first?.isKey == true)
        #expect(partial.packets.map(\.pts).sorted() == (0..<100).map(Int64.init))
        var paths: [String] = []
        for (k, bundle) in try [partial, render(100..<250), render(250..<500), render(500..<629)].enumerated() {
            #expect(bundle.codec == partial.codec, "a partial segment is encoded like any other")
            let path = "\(dir)/seg-\(k).dfpb"
            try MediaFile.writeAtomically(bundle.encoded(), to: path)
            paths.append(path)
        }
        let output = "\(dir)/out.mp4"
        let report = try Stitcher.stitch(StitchRequest(segmentPaths: paths, audioPath: TestMedia.path("dub-long.wav"),
                                                       outputPath: output, expectedFrameCount: info.frameCount,
                                                       frameRate: info.frameRate, rotation: info.rotation))
        #expect(report.framesWritten == 629)
        #expect(try VideoDecoder.decodeFrames(path: output, layout: .yuv420p, threads: 2) { _ in } == 629)

        // Stopped before the first frame of the segment was finished: nothing to return.
        let error = #expect(throws: DubfarmError.self) { try render(300..<400, stopAfter: 0) }
        #expect(error?.code == .cancelled)
    }

    @Test func missingFrameIsNamed() throws {
        let source = try SourceVideo(path: TestMedia.path("speaker-c.mp4"))
        let (input, window) = try SegmentCutter.cut(source, frames: 10..<20, context: 0)
        var pts = window.framePTS
        pts[4] += 1  // a timestamp the stream does not have: frame 14 never arrives
        do {
            _ = try SegmentRenderer.render(input: input, framePTS: pts, decodedFrames: window.decodedFrames, outputFrames: 10..<20,
                                           frameRate: Rational(25, 1), encoder: Self.settings, layout: .yuv420p,
                                           processor: PassthroughProcessor(), threads: 1)
            Issue.record("expected a missing-frame error")
        } catch let e as DubfarmError {
            #expect(e.message.contains("frame 14"), "\(e.message)")
        }
    }
}
