import FarmTestSupport
import Foundation
import Testing
import DubfarmCore
import DurableFiles
import MediaPipeline

/// Cost of the coordinator's media work on a 10-minute input, against `ffmpeg -c copy`.
/// Opt-in: `DUBFARM_MEDIA_BENCH=1 swift test --filter MediaPipelineTests.BenchTests`.
@Suite(.enabled(if: TestMedia.available && ProcessInfo.processInfo.environment["DUBFARM_MEDIA_BENCH"] != nil,
                "set DUBFARM_MEDIA_BENCH=1 to run the media benchmark"))
struct BenchTests {
    static func seconds(_ body: () throws -> Void) rethrows -> Double {
        let t = ContinuousClock.now
        try body()
        let d = ContinuousClock.now - t
        return Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
    }

    @Test func coordinatorCostVersusRemux() throws {
        let ffmpeg = try #require(TestMedia.tool("ffmpeg"))
        let dir = try TestMedia.scratch("bench")
        defer { TestMedia.cleanup(dir) }
        // 24 × speaker-long (25.16 s, 844x844 25 fps) = 10 min 3.84 s, stream-copied.
        let input = "\(dir)/ten-minutes.mp4"
        try TestMedia.run(ffmpeg, ["-v", "error", "-stream_loop", "23", "-i", TestMedia.path("speaker-long.mp4"), "-c", "copy", input])

        let remux = try Self.seconds { try TestMedia.run(ffmpeg, ["-v", "error", "-i", input, "-c", "copy", "-y", "\(dir)/remux.mp4"]) }
        let fsyncRemux = try Self.seconds { try MediaFile.fsync(path: "\(dir)/remux.mp4") }
        let probe = try Self.seconds { _ = try MediaProbe.probe(path: input) }
        let duration = String(format: "%.6f", 15096.0 / 25)
        // The dub padded with silence to the video's length, as the stitch does.
        let remuxWithAAC = try Self.seconds {
            try TestMedia.run(ffmpeg, ["-v", "error", "-i", input, "-i", TestMedia.path("dub-long.wav"), "-map", "0:v", "-map", "1:a",
                                       "-c:v", "copy", "-c:a", "aac", "-b:a", "192k", "-ar", "48000", "-ac", "2",
                                       "-af", "apad=whole_dur=\(duration)", "-t", duration, "-y", "\(dir)/remux-aac.mp4"])
        }

        var source: SourceVideo!
        let index = try Self.seconds { source = try SourceVideo(path: input) }
        let info = source.info!
        let spans = SegmentPlanner.plan(frameCount: info.frameCount, frameRate: info.frameRate, segmentSeconds: 10)
        var taskBytes = 0
        let cut = try Self.seconds {
            for s in spans {
                let (b, _) = try SegmentCutter.cut(source, frames: s.frames, context: 3)
                taskBytes += b.encoded().count
            }
        }

        // Stand-ins for the workers' output: the source packets of each segment (segments start on
        // keyframes, GOPs are closed) with pts = frame index and dts = decode index - delay.
        let order = source.index.presentationOrder
        var rank = [Int](repeating: 0, count: order.count)
        for (f, e) in order.enumerated() { rank[e] = f }
        let delay = rank.indices.map { $0 - rank[$0] }.max() ?? 0
        var codec = source.codec
        codec.timeBase = info.frameRate.inverted
        var paths: [String] = []
        var starts = [0]  // segment starts on keyframes, about 250 frames apart
        for f in 1..<order.count where source.index.entries[order[f]].isKey && f - starts.last! >= 250 { starts.append(f) }
        let standIns = starts.enumerated().map { k, a in SegmentSpan(index: k, frames: a..<(k + 1 < starts.count ? starts[k + 1] : order.count)) }
        for s in standIns {
            let w = source.index.window(for: s.frames, context: 0)
            var b = try source.bundle(for: w)
            #expect(b.packets.count == s.frames.count)
            b.codec = codec
            for (i, e) in w.packets.enumerated() {
                b.packets[i].pts = Int64(rank[e])
                b.packets[i].dts = Int64(e - delay)
            }
            let p = "\(dir)/seg-\(s.index).dfpb"
            try MediaFile.writeAtomically(b.encoded(), to: p)
            paths.append(p)
        }
        var request = StitchRequest(segmentPaths: paths, audioPath: nil, outputPath: "\(dir)/out-video.mp4",
                                    expectedFrameCount: info.frameCount, frameRate: info.frameRate)
        let stitchVideo = try Self.seconds { _ = try Stitcher.stitch(request) }
        request.audioPath = TestMedia.path("dub-long.wav")
        request.outputPath = "\(dir)/out.mp4"
        let stitch = try Self.seconds { _ = try Stitcher.stitch(request) }

        print(String(format: "bench: %d frames, %d segments, %.1f MB input", info.frameCount, spans.count,
                     Double((try? FileManager.default.attributesOfItem(atPath: input)[.size] as? Int) ?? 0) / 1e6))
        print(String(format: "bench: ffmpeg -c copy %.2f s (then fsync %.2f s); ffmpeg copy video + AAC dub padded %.2f s; probe (demux count) %.2f s",
                     remux, fsyncRemux, remuxWithAAC, probe))
        print(String(format: "bench: index %.2f s, cut %d tasks (%.1f MB) %.2f s, stitch video-only %.2f s, stitch with AAC %.2f s",
                     index, spans.count, Double(taskBytes) / 1e6, cut, stitchVideo, stitch))
        print(String(format: "bench: index+cut+stitch(video) = %.2f× remux; index+cut+stitch(AAC) = %.2f× ffmpeg copy+AAC",
                     (index + cut + stitchVideo) / remux, (index + cut + stitch) / remuxWithAAC))
    }

    static func residentMB() -> Double {
        guard let s = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8),
              let pages = s.split(separator: " ").dropFirst().first.flatMap({ Double($0) }) else { return 0 }
        return pages * 4096 / 1e6
    }

    /// Repeats every operation many times; resident memory must stay flat (no leaked FFmpeg objects).
    @Test func noLeaks() throws {
        let dir = try TestMedia.scratch("leak")
        defer { TestMedia.cleanup(dir) }
        let source = try SourceVideo(path: TestMedia.path("speaker-c.mp4"))
        let settings = EncoderSettings(crf: 35, preset: "ultrafast")
        func round() throws {
            _ = try MediaProbe.probe(path: TestMedia.path("speaker-a.mp4"))
            _ = try SourceIndexer.index(path: TestMedia.path("speaker-b.mp4"))
            let (input, window) = try SegmentCutter.cut(source, frames: 0..<10, context: 2)
            let seg = try SegmentRenderer.render(input: input, window: window, outputFrames: 0..<10, frameRate: Rational(25, 1),
                                                 encoder: settings, layout: .rgb24, processor: PassthroughProcessor(), threads: 1)
            try MediaFile.writeAtomically(seg.encoded(), to: "\(dir)/s.dfpb")
            _ = try Stitcher.stitch(StitchRequest(segmentPaths: ["\(dir)/s.dfpb"], audioPath: TestMedia.path("dub-2.wav"),
                                                  outputPath: "\(dir)/o.mp4", expectedFrameCount: 10, frameRate: Rational(25, 1)))
            _ = try DubAudio.decodePCM(path: TestMedia.path("dub-1.wav"))
            _ = try ImageLoader.load(path: TestMedia.path("face-source.png"))
            _ = try? MediaProbe.probe(path: TestMedia.path("dub-1.wav"))
            try Recut.recut(input: TestMedia.path("speaker-a.mp4"), output: "\(dir)/r.mp4", frameRate: Rational(30, 1), keyframesAt: [0],
                            timing: .timestamps, crf: 40, preset: "ultrafast", threads: 1)
            let r = try SourceIndexer.index(path: "\(dir)/r.mp4")
            let blind = PacketIndex(entries: r.index.entries.map { var e = $0; e.position = -1; return e })
            _ = try SourceVideo(path: "\(dir)/r.mp4", codec: r.codec, index: blind).bundle(for: blind.window(for: 10..<20, context: 1))
        }
        for _ in 0..<5 { try round() }
        let before = Self.residentMB()
        let rounds = Int(ProcessInfo.processInfo.environment["DUBFARM_LEAK_ROUNDS"] ?? "") ?? 40
        for i in 0..<rounds {
            try round()
            if i % 20 == 19 { print(String(format: "bench: after %d rounds %.1f MB", i + 1, Self.residentMB())) }
        }
        let after = Self.residentMB()
        print(String(format: "bench: resident memory %.1f MB before %d rounds, %.1f MB after", before, rounds, after))
        #expect(after - before < 20)
    }
}
