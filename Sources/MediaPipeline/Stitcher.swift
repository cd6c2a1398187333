import DubfarmCore
import DurableFiles
import FFmpeg
#if canImport(Glibc)
import Glibc
#endif

/// One encoded segment to stitch: a packet bundle file (``PacketBundle/encoded()``), or one
/// record of a job's ``ResultLog``.
package struct StitchSegment: Sendable, Hashable, Codable {
    package var path: String
    /// The record in the result log `path`; nil: `path` is a bundle file.
    package var record: ResultRecord?
    package init(path: String, record: ResultRecord? = nil) {
        self.path = path
        self.record = record
    }
}

/// What to stitch: a job's encoded segments, in order, and its dub track.
package struct StitchRequest: Sendable, Hashable, Codable {
    /// The segments, in order.
    package var segments: [StitchSegment]
    /// Segment files as written from ``PacketBundle/encoded()``, in segment order.
    package var segmentPaths: [String] {
        get { segments.map(\.path) }
        set { segments = newValue.map { StitchSegment(path: $0) } }
    }
    /// The dub track (any format FFmpeg reads); nil: video only.
    package var audioPath: String?
    /// Where the finished MP4 goes (written to a temporary name next to it, then renamed).
    package var outputPath: String
    /// The input's exact video frame count; the output must have exactly this many.
    package var expectedFrameCount: Int
    package var frameRate: Rational
    /// Rotation (degrees counter-clockwise, from ``VideoStreamInfo/rotation``) stored in the output.
    package var rotation: Int
    /// Output audio sample rate (Hz) and bit rate (bits/s): AAC stereo.
    package var audioSampleRate: Int
    package var audioBitRate: Int

    package init(segmentPaths: [String], audioPath: String?, outputPath: String, expectedFrameCount: Int,
                frameRate: Rational, rotation: Int = 0, audioSampleRate: Int = 48_000, audioBitRate: Int = 192_000) {
        self.init(segments: segmentPaths.map { StitchSegment(path: $0) }, audioPath: audioPath, outputPath: outputPath,
                  expectedFrameCount: expectedFrameCount, frameRate: frameRate, rotation: rotation,
                  audioSampleRate: audioSampleRate, audioBitRate: audioBitRate)
    }

    package init(segments: [StitchSegment], audioPath: String?, outputPath: String, expectedFrameCount: Int,
                frameRate: Rational, rotation: Int = 0, audioSampleRate: Int = 48_000, audioBitRate: Int = 192_000) {
        self.segments = segments
        self.audioPath = audioPath
        self.outputPath = outputPath
        self.expectedFrameCount = expectedFrameCount
        self.frameRate = frameRate
        self.rotation = rotation
        self.audioSampleRate = audioSampleRate
        self.audioBitRate = audioBitRate
    }
}

/// What the stitch wrote.
package struct StitchReport: Sendable, Hashable, Codable {
    package var outputPath: String
    package var framesWritten: Int
    /// `framesWritten / frameRate` seconds.
    package var videoDuration: Double
    /// Seconds of audio encoded (equal to the video's, to the sample); 0 without audio.
    package var audioDuration: Double
    /// How the dub track was fitted (nil without audio).
    package var audioFit: AudioFit?
    /// Size of the output file.
    package var bytes: Int64
}

/// Joins encoded segments by stream copy and muxes the dub track, encoded once as AAC.
package enum Stitcher {
    /// Within this many seconds the dub counts as exactly as long as the video.
    package static let exactTolerance = 0.001

    /// Stitches `request` into an MP4.
    ///
    /// Video: every segment's packets are copied (no re-encode); all segments must have identical
    /// codec parameters and continue each other's frame indices. Audio: the whole dub track is
    /// decoded once, resampled to stereo at ``StitchRequest/audioSampleRate``, padded with
    /// silence or trimmed to exactly the video's duration, and encoded once with FFmpeg's AAC
    /// encoder. The file is written under a temporary name, fsynced, re-probed (its frame count
    /// must equal ``StitchRequest/expectedFrameCount``) and only then renamed into place; on any
    /// error nothing is left at either name.
    package static func stitch(_ request: StitchRequest) throws -> StitchReport {
        try farmErrors { try stitchSegments(request) }
    }

    private static func stitchSegments(_ request: StitchRequest) throws -> StitchReport {
        let name = fileName(request.outputPath)
        guard !request.segments.isEmpty else { throw DubfarmError(.stitch, "\(name): no segments to stitch") }
        guard request.frameRate.num > 0, request.frameRate.den > 0 else {
            throw DubfarmError(.stitch, "\(name): frame rate \(request.frameRate) is not positive")
        }
        guard request.expectedFrameCount > 0 else { throw DubfarmError(.stitch, "\(name): expected frame count must be positive") }
        let tmp = MediaFile.temporaryPath(for: request.outputPath)
        do {
            var report = try write(request, to: tmp)
            try MediaFile.fsync(path: tmp)
            let info: ReadBack
            do {
                info = try farmErrors { try readBack(tmp, expectedFrames: request.expectedFrameCount) }
            } catch let e as DubfarmError {
                throw DubfarmError(.stitch, "\(name): the written file does not read back (\(e.message)); not delivered")
            }
            guard info.frames == request.expectedFrameCount else {
                throw DubfarmError(.stitch, "\(name): the written file has \(info.frames) video frames, expected \(request.expectedFrameCount); not delivered")
            }
            if request.audioPath != nil {
                let audio = info.audio ?? 0
                guard abs(audio - report.videoDuration) <= 1 / request.frameRate.value else {
                    throw DubfarmError(.stitch, "\(name): the written audio lasts \(audio) s but the video \(report.videoDuration) s; not delivered")
                }
            }
            report.bytes = info.fileSize
            try MediaFile.commit(tmp, to: request.outputPath)
            return report
        } catch {
            unlink(tmp)
            throw error
        }
    }

    /// What the stitch checks of the file it wrote.
    struct ReadBack {
        var frames: Int
        var audio: Double?
        var fileSize: Int64
    }

    /// Reads the written file back: its video frame count and audio duration.
    ///
    /// An MP4 is checked from its sample tables, without reading the payloads again: the video
    /// track's sample count (from the index the demuxer builds, and the header's frame count)
    /// and that the last sample lies inside the file. Any disagreement there, and any other
    /// container, falls back to ``MediaProbe/probe(path:requireVideo:)``, which demuxes every
    /// packet.
    static func readBack(_ path: String, expectedFrames: Int) throws -> ReadBack {
        if let fast = try sampleTableReadBack(path), fast.frames == expectedFrames { return fast }
        let info = try MediaProbe.probe(path: path)
        return ReadBack(frames: info.video?.frameCount ?? 0, audio: info.audio?.duration, fileSize: info.fileSize)
    }

    private static func sampleTableReadBack(_ path: String) throws -> ReadBack? {
        let input = try InputFile(path: path, findStreamInfo: false)
        guard input.formatName.hasPrefix("mov"), let v = input.videoStreamIndex() else { return nil }
        let entries = input.indexEntryCount(stream: v)
        guard entries > 0, input.stream(v).headerFrameCount == entries, let last = input.lastIndexEntry(stream: v),
              last.position >= 0, last.position + Int64(last.size) <= input.fileSize else { return nil }
        var audio: Double? = nil
        if let a = input.audioStreamIndex() {
            let ast = input.stream(a)
            guard let duration = ast.duration else { return nil }
            audio = Double(duration) * Rational(ast.timeBase).value
        }
        return ReadBack(frames: entries, audio: audio, fileSize: input.fileSize)
    }

    static func describeMismatch(_ a: CodecParameters, _ b: CodecParameters) -> String {
        var d: [String] = []
        if a.codecName != b.codecName { d.append("codec \(b.codecName) vs \(a.codecName)") }
        if a.width != b.width || a.height != b.height { d.append("size \(b.width)x\(b.height) vs \(a.width)x\(a.height)") }
        if a.pixelFormat != b.pixelFormat { d.append("pixel format \(b.pixelFormat) vs \(a.pixelFormat)") }
        if a.timeBase != b.timeBase || a.frameRate != b.frameRate { d.append("timing \(b.frameRate) fps vs \(a.frameRate) fps") }
        if a.extradata != b.extradata { d.append("codec headers (SPS/PPS) differ") }
        if d.isEmpty { d.append("profile, level or colour settings differ") }
        return d.joined(separator: ", ")
    }

    private static func write(_ req: StitchRequest, to tmp: String) throws -> StitchReport {
        let name = fileName(req.outputPath)
        let fps = req.frameRate
        let videoTB = Ratio(fps.inverted)
        let out = try OutputFile(tempPath: tmp, finalPath: req.outputPath)

        // The first segment fixes the codec parameters.
        var segment = try loadSegment(req.segments[0], number: 0, name: name)
        let codec = segment.layout.codec
        guard codec.timeBase.num * fps.num == codec.timeBase.den * fps.den else {
            throw DubfarmError(.stitch, "\(name): segment 0 has time base \(codec.timeBase), expected 1/\(fps) (pts must be frame indices)")
        }
        let vst = try out.addVideoStream(parameters: VideoParameters(codec), frameRate: Ratio(fps), rotation: req.rotation)

        // Audio: encoded whole before muxing (a few MB of AAC packets), so it can be interleaved.
        let targetSamples = Int64((Double(req.expectedFrameCount) * Double(fps.den) * Double(req.audioSampleRate) / Double(fps.num)).rounded())
        var audio: AACTrack? = nil
        var fit: AudioFit? = nil
        if let ap = req.audioPath {
            let track = try AACTrack(path: ap, rate: req.audioSampleRate, bitRate: req.audioBitRate,
                                     targetSamples: targetSamples, globalHeader: out.wantsGlobalHeader)
            let diff = Double(track.sourceSamplesAtOutputRate - targetSamples) / Double(req.audioSampleRate)
            fit = abs(diff) <= exactTolerance ? .exact : diff < 0 ? .padded(seconds: -diff) : .trimmed(seconds: diff)
            audio = track
        }
        let ast = try audio.map { try out.addStream(for: $0) }
        try out.begin()

        var audioNext = 0
        func writeAudio(upTo dts: Int64?) throws {
            guard let track = audio, let ast else { return }
            while audioNext < track.packets.count {
                let p = track.packets[audioNext]
                if let dts, Ratio.compare(p.pts, track.timeBase, dts, videoTB) > 0 { return }
                try out.write(p, to: ast, from: track.timeBase)
                audioNext += 1
            }
        }

        let pkt = Packet()
        var nextFrame: Int64 = 0
        var lastDTS = Int64.min
        var written = 0
        for k in req.segments.indices {
            if k > 0 { segment = try loadSegment(req.segments[k], number: k, name: name) }
            let packets = segment.layout.packets
            guard segment.layout.codec == codec else {
                throw DubfarmError(.stitch, "\(name): segment \(k) was encoded differently from segment 0 (\(describeMismatch(codec, segment.layout.codec))); all segments of a job must use identical encoder settings")
            }
            guard let first = packets.first, first.isKey else {
                throw DubfarmError(.stitch, "\(name): segment \(k) does not start with a keyframe")
            }
            var lo = Int64.max, hi = Int64.min
            for p in packets {
                lo = min(lo, p.pts)
                hi = max(hi, p.pts)
            }
            guard lo == nextFrame, hi - lo + 1 == Int64(packets.count) else {
                throw DubfarmError(.stitch, "\(name): segment \(k) covers frames \(lo)...\(hi) in \(packets.count) packets; expected it to start at frame \(nextFrame) with one packet per frame")
            }
            for (i, p) in packets.enumerated() {
                guard p.dts > lastDTS else {
                    throw DubfarmError(.stitch, "\(name): segment \(k) has decode timestamps that do not follow the previous segment's (\(p.dts) after \(lastDTS))")
                }
                lastDTS = p.dts
                try writeAudio(upTo: p.dts)
                // A reference into the segment file's buffer: no copy of the payload.
                try segment.load(i, into: pkt)
                try out.write(pkt, to: vst, from: videoTB)
                written += 1
            }
            nextFrame = hi + 1
        }
        guard written == req.expectedFrameCount else {
            throw DubfarmError(.stitch, "\(name): the segments hold \(written) frames, expected \(req.expectedFrameCount)")
        }
        try writeAudio(upTo: nil)
        try out.finish()
        return StitchReport(outputPath: req.outputPath, framesWritten: written,
                            videoDuration: Double(written) / fps.value,
                            audioDuration: audio == nil ? 0 : Double(targetSamples) / Double(req.audioSampleRate),
                            audioFit: fit, bytes: 0)
    }

    private static func loadSegment(_ source: StitchSegment, number k: Int, name: String) throws -> BundleFile {
        let path = source.path
        do {
            return try BundleFile(path: path, record: source.record)
        } catch let e as DubfarmError where e.code == .protocolViolation {
            throw DubfarmError(.stitch, "\(name): segment \(k) (\(fileName(path))\(source.record.map { " at byte \($0.offset)" } ?? "")) is damaged: \(e)")
        } catch let e as DubfarmError {
            throw DubfarmError(e.code == .notFound ? .stitch : e.code, "\(name): cannot read segment \(k): \(e.message)")
        }
    }
}
