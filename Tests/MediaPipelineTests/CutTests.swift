import FarmTestSupport
import Foundation
import Testing
import DubfarmCore
import MediaPipeline

@Suite(.enabled(if: TestMedia.available, TestMedia.skipReason))
struct CutTests {
    @Test func indexAndWindows() throws {
        let (codec, index, info) = try SourceIndexer.index(path: TestMedia.path("speaker-long.mp4"))
        #expect(index.frameCount == 629)
        #expect(info.frameCount == 629 && info.frameRate == Rational(25, 1))
        #expect(codec.codecName == "h264" && codec.width == 844 && !codec.extradata.isEmpty)
        #expect(codec.timeBase == Rational(1, 12800))
        #expect(index.startsWithKeyframe)
        #expect(index.entries.allSatisfy { $0.position >= 0 }, "MP4 positions should be verified as reliable")
        #expect(index.entries.contains { $0.dts < 0 }, "this file has negative dts (B-frames)")
        // Presentation order is increasing pts.
        let pts = (0..<index.frameCount).map { index.pts(ofFrame: $0) }
        #expect(zip(pts, pts.dropFirst()).allSatisfy { $0 < $1 })

        let spans = SegmentPlanner.plan(frameCount: index.frameCount, frameRate: info.frameRate, segmentSeconds: 10)
        #expect(spans.map(\.frames.count) == [250, 250, 129])
        for s in spans {
            let w = index.window(for: s.frames, context: 3)
            #expect(index.entries[w.packets.lowerBound].isKey)
            #expect(w.decodedFrames == SegmentPlanner.contextRange(of: s.frames, context: 3, frameCount: 629))
            #expect(w.framePTS.count == w.decodedFrames.count)
            // Every decoded frame's packet is inside the window.
            for f in w.decodedFrames { #expect(w.packets.contains(index.presentationOrder[f])) }
        }
    }

    /// Bundles read by position must hold exactly the bytes the demuxer returns, in MP4, MOV and MKV.
    @Test(arguments: ["mp4", "mov", "mkv"])
    func bundleBytesEqualDemuxer(container: String) async throws {
        var path = TestMedia.path("speaker-long.mp4")
        let dir = try TestMedia.scratch("bundle")
        defer { TestMedia.cleanup(dir) }
        if container != "mp4" {
            guard let ffmpeg = TestMedia.tool("ffmpeg") else { return }
            path = "\(dir)/speaker-long.\(container)"
            try TestMedia.run(ffmpeg, ["-v", "error", "-i", TestMedia.path("speaker-long.mp4"), "-c", "copy", path])
        }
        let source = try SourceVideo(path: path)
        let reference = try VideoDemuxer.packets(path: path)
        #expect(reference.count == 629)
        #expect(source.index.frameCount == 629)
        for span in SegmentPlanner.plan(frameCount: 629, segmentFrames: 250) {
            let (bundle, window) = try SegmentCutter.cut(source, frames: span.frames, context: 2)
            #expect(bundle.codec == source.codec)
            let expected = Array(reference[window.packets])
            #expect(bundle.packets.count == expected.count)
            #expect(bundle.packets.map(\.data) == expected.map(\.data), "\(container): bytes differ from the demuxer's")
            #expect(bundle.packets.map(\.pts) == expected.map(\.pts))
            #expect(bundle.packets.map(\.isKey) == expected.map(\.isKey))
            #expect(bundle.packets.first?.isKey == true)
        }
        // One SourceVideo serves several threads at once.
        let spans = SegmentPlanner.plan(frameCount: 629, segmentFrames: 100)
        let concurrent = try await withThrowingTaskGroup(of: (Int, [[UInt8]]).self) { group in
            for s in spans {
                group.addTask { (s.index, try source.bundle(for: source.index.window(for: s.frames, context: 2)).packets.map(\.data)) }
            }
            var out: [Int: [[UInt8]]] = [:]
            for try await (k, data) in group { out[k] = data }
            return out
        }
        for s in spans {
            #expect(concurrent[s.index] == Array(reference[source.index.window(for: s.frames, context: 2).packets]).map(\.data))
        }
        // The seek+demux fallback (positions unknown) returns the same packets.
        let blind = PacketIndex(entries: source.index.entries.map { var e = $0; e.position = -1; return e })
        let fallback = try SourceVideo(path: path, codec: source.codec, index: blind)
        let w = blind.window(for: 300..<400, context: 2)
        let b = try fallback.bundle(for: w)
        #expect(b.packets.map(\.data) == Array(reference[w.packets]).map(\.data))
    }

    /// HEVC with B-frames in Matroska (issue 16): the container stores no decode timestamps, so
    /// the ones libavformat derives after a seek differ from the indexing scan's; packets are
    /// known by pts and size. Every window, read by position or by seek and demux, holds exactly
    /// the packets of a sequential demux.
    @Test func hevcWithBFramesInMatroska() throws {
        guard let ffmpeg = TestMedia.tool("ffmpeg") else { return }
        let dir = try TestMedia.scratch("wild")
        defer { TestMedia.cleanup(dir) }
        let path = "\(dir)/speaker.mkv"
        try TestMedia.run(ffmpeg, ["-v", "error", "-i", TestMedia.path("speaker-long.mp4"), "-t", "8", "-c:v", "libx265", "-preset", "ultrafast",
                                   "-x265-params", "log-level=error:bframes=4:keyint=50", "-c:a", "libopus", path])
        let source = try SourceVideo(path: path)
        let reference = try VideoDemuxer.packets(path: path)
        #expect(source.index.frameCount == reference.count && reference.count == 200)
        let blind = PacketIndex(entries: source.index.entries.map { var e = $0; e.position = -1; return e })
        let fallback = try SourceVideo(path: path, codec: source.codec, index: blind)
        for span in SegmentPlanner.plan(frameCount: source.index.frameCount, segmentFrames: 40) {
            for (how, video) in [("by position", source), ("by seek and demux", fallback)] {
                let (bundle, window) = try SegmentCutter.cut(video, frames: span.frames, context: 2)
                let expected = Array(reference[window.packets])
                #expect(bundle.packets.map(\.data) == expected.map(\.data), "\(how), frames \(span.frames)")
                #expect(bundle.packets.map(\.pts) == expected.map(\.pts), "\(how), frames \(span.frames)")
                #expect(bundle.packets.first?.isKey == true)
            }
        }
    }

    @Test func recutPlacesKeyframes() throws {
        let dir = try TestMedia.scratch("recut")
        defer { TestMedia.cleanup(dir) }
        // A file with a single keyframe (x264's default keyframe interval exceeds its 125 frames).
        let sparse = "\(dir)/sparse.mp4"
        let n = try Recut.recut(input: TestMedia.path("speaker-c.mp4"), output: sparse, frameRate: Rational(25, 1),
                                keyframesAt: [0], crf: 30, preset: "ultrafast", threads: 2)
        #expect(n == 125)
        let before = try SourceIndexer.index(path: sparse)
        #expect(before.index.longestKeyframeInterval > 100)
        #expect(SegmentCutter.needsRecut(before.index, maxInterval: 50))

        let wanted = [0, 25, 50, 75, 100]
        let out = "\(dir)/recut.mp4"
        try Recut.recut(input: sparse, output: out, frameRate: Rational(25, 1), keyframesAt: wanted, threads: 2)
        let after = try SourceIndexer.index(path: out)
        #expect(after.info.frameCount == 125 && after.info.frameRate == Rational(25, 1))
        let keyFrames = (0..<125).filter { after.index.entries[after.index.presentationOrder[$0]].isKey }
        #expect(Set(wanted).isSubset(of: Set(keyFrames)), "keyframes at \(keyFrames)")
        #expect(!SegmentCutter.needsRecut(after.index, maxInterval: 50))
        #expect(try !FileManager.default.contentsOfDirectory(atPath: dir).contains { $0.contains(".tmp-") })
    }

    /// A raw H.264 stream has no timestamps: the indexer says so, and a recut makes it cuttable.
    @Test func rawStreamIsRecut() throws {
        guard let ffmpeg = TestMedia.tool("ffmpeg") else { return }
        let dir = try TestMedia.scratch("raw")
        defer { TestMedia.cleanup(dir) }
        let raw = "\(dir)/speaker-c.h264"
        try TestMedia.run(ffmpeg, ["-v", "error", "-i", TestMedia.path("speaker-c.mp4"), "-c:v", "copy", "-an", "-bsf:v", "h264_mp4toannexb", raw])
        let r = try SourceIndexer.index(path: raw)
        #expect(r.info.frameCount == 125)
        #expect(!r.info.hasPresentationTimestamps)
        #expect(RecutReason.decide(info: r.info, index: r.index, maxKeyframeSeconds: 10) == .noTimestamps)
        let fixed = "\(dir)/fixed.mp4"
        try Recut.recut(input: raw, output: fixed, frameRate: r.info.frameRate, keyframesAt: [0, 50, 100], crf: 30, preset: "ultrafast", threads: 2)
        let f = try SourceIndexer.index(path: fixed)
        #expect(f.info.frameCount == 125 && f.info.hasPresentationTimestamps)
        #expect(!SegmentCutter.needsRecut(f.index, maxInterval: 50))
        #expect(RecutReason.decide(info: f.info, index: f.index, maxKeyframeSeconds: 2) == nil)
    }

    /// speaker-a is variable frame rate: 135 frames over 6.07 s. The default numbering keeps 135
    /// frames at 30 fps; a timestamp recut keeps its timeline instead.
    /// Planning's decision: a variable frame rate is re-timed (and counts the timeline's frames),
    /// keyframes too far apart get re-encoded, anything else is cut as it is.
    @Test func recutDecision() throws {
        let a = try SourceIndexer.index(path: TestMedia.path("speaker-a.mp4"))
        #expect(RecutReason.decide(info: a.info, index: a.index, maxKeyframeSeconds: 10) == .variableFrameRate)
        #expect(RecutReason.frameCount(a.info, .variableFrameRate) == 183 && a.info.timelineFrames == 183)
        let long = try SourceIndexer.index(path: TestMedia.path("speaker-long.mp4"))
        #expect(RecutReason.decide(info: long.info, index: long.index, maxKeyframeSeconds: 10) == nil)
        #expect(RecutReason.frameCount(long.info, nil) == 629)
        let limit = Int((0.5 * long.info.frameRate.value).rounded(.up))
        if long.index.longestKeyframeInterval > limit {
            #expect(RecutReason.decide(info: long.info, index: long.index, maxKeyframeSeconds: 0.5)
                    == .keyframesApart(longest: long.index.longestKeyframeInterval, limit: limit))
        }
    }

    @Test("hidden frames (an MOV edit list), a stream cut before its keyframe and an MPEG program stream are re-cut, with the frames a player shows")
    func containersThatNeedARecut() throws {
        guard let ffmpeg = TestMedia.tool("ffmpeg") else { return }
        let dir = try TestMedia.scratch("containers")
        defer { TestMedia.cleanup(dir) }
        let base = "\(dir)/base.mp4"
        try TestMedia.run(ffmpeg, ["-v", "error", "-t", "2", "-i", TestMedia.path("speaker-c.mp4"), "-vf", "scale=160:160",
                                   "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-an", base])
        // Copied from 0.3 s: the copy starts at the keyframe before, the edit list hides 8 frames.
        try TestMedia.run(ffmpeg, ["-v", "error", "-ss", "0.3", "-i", base, "-c", "copy", "\(dir)/trimmed.mov"])
        let trimmed = try SourceIndexer.index(path: "\(dir)/trimmed.mov")
        #expect(trimmed.info.hiddenFrames == 8 && trimmed.info.frameCount == trimmed.index.entries.count - 8)
        #expect(RecutReason.decide(info: trimmed.info, index: trimmed.index, maxKeyframeSeconds: 10) == .hiddenFrames(8))
        #expect(RecutReason.frameCount(trimmed.info, .hiddenFrames(8)) == trimmed.info.frameCount)
        let n = try Recut.recut(input: "\(dir)/trimmed.mov", output: "\(dir)/trimmed-recut.mp4", frameRate: trimmed.info.frameRate,
                                keyframesAt: [0], timing: .timestamps, crf: 30, preset: "ultrafast", threads: 2)
        #expect(n == trimmed.info.frameCount)
        // A transport stream that starts 10 frames before a keyframe.
        try TestMedia.run(ffmpeg, ["-v", "error", "-i", base, "-c", "copy", "-f", "mpegts", "\(dir)/whole.ts"])
        let whole = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/whole.ts"))
        try whole.suffix(from: 188 * (whole.count / 188 / 3)).write(to: URL(fileURLWithPath: "\(dir)/cut.ts"))
        let cut = try SourceIndexer.index(path: "\(dir)/cut.ts")
        #expect(!cut.index.startsWithKeyframe && cut.info.hiddenFrames > 0)
        #expect(RecutReason.decide(info: cut.info, index: cut.index, maxKeyframeSeconds: 10) == .hiddenFrames(cut.info.hiddenFrames))
        // An MPEG program stream: the seek-and-demux fallback could not find its video.
        try TestMedia.run(ffmpeg, ["-v", "error", "-i", base, "-c:v", "mpeg2video", "-f", "vob", "\(dir)/ps.mpg"])
        let ps = try SourceIndexer.index(path: "\(dir)/ps.mpg")
        #expect(!ps.info.listedInHeader && ps.info.frameCount == 50)
        #expect(RecutReason.decide(info: ps.info, index: ps.index, maxKeyframeSeconds: 10) == .streamsUnlisted)
        #expect(try MediaProbe.probe(path: "\(dir)/ps.mpg").video?.listedInHeader == true)   // probing does not look
        // The common case stays as it is.
        let plain = try SourceIndexer.index(path: base)
        #expect(plain.info.hiddenFrames == 0 && plain.info.listedInHeader && !plain.info.isVariableFrameRate)
        #expect(RecutReason.decide(info: plain.info, index: plain.index, maxKeyframeSeconds: 10) == nil)
        #expect(plain.info.timelineFrames == 50 && abs(plain.info.timelineDuration - 2) < 1e-9)
    }

    @Test func variableFrameRateRecut() throws {
        let a = try SourceIndexer.index(path: TestMedia.path("speaker-a.mp4"))
        #expect(a.info.isVariableFrameRate)
        #expect(abs(a.info.timelineDuration - 6.1) < 0.01)   // 6.066 s from the first frame to the last, plus the last
        let b = try MediaProbe.probe(path: TestMedia.path("speaker-b.mp4"))
        #expect(b.video?.isVariableFrameRate == false)

        let dir = try TestMedia.scratch("vfr")
        defer { TestMedia.cleanup(dir) }
        let out = "\(dir)/cfr.mp4"
        let n = try Recut.recut(input: TestMedia.path("speaker-a.mp4"), output: out, frameRate: Rational(30, 1), keyframesAt: [0, 90],
                                timing: .timestamps, crf: 30, preset: "ultrafast", threads: 2)
        let expected = a.info.timelineFrames
        #expect(n == expected)
        let r = try SourceIndexer.index(path: out)
        #expect(r.info.frameCount == n && r.info.frameRate == Rational(30, 1) && !r.info.isVariableFrameRate)
        #expect(abs(r.info.duration - a.info.timelineDuration) < 1.0 / 30)
        let keys = (0..<n).filter { r.index.entries[r.index.presentationOrder[$0]].isKey }
        #expect(keys.contains(0) && keys.contains(90))
    }
}
