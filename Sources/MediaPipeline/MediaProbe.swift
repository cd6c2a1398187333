import DubfarmCore
import FFmpeg
#if canImport(Glibc)
import Glibc
#endif

/// What the prober found about a file's video stream.
package struct VideoStreamInfo: Sendable, Hashable, Codable {
    /// Index of the stream in the container.
    package var streamIndex: Int
    /// FFmpeg codec name (`h264`).
    package var codecName: String
    package var width: Int
    package var height: Int
    /// FFmpeg pixel format name (`yuv420p`).
    package var pixelFormat: String
    /// The nominal frame rate (see ``MediaProbe`` for how it is chosen).
    package var frameRate: Rational
    /// The time base of the stream's packet timestamps.
    package var timeBase: Rational
    /// The exact number of frames, counted by demuxing every packet (not the header's claim).
    package var frameCount: Int
    /// Rotation from the display matrix in degrees, counter-clockwise (as ffprobe reports it), in `0..<360`.
    package var rotation: Int
    /// Whether every packet carried a presentation timestamp. Raw elementary streams (`.h264`)
    /// do not: their frames cannot be cut by timestamp and the input must be re-cut first
    /// (``RecutReason/noTimestamps``).
    package var hasPresentationTimestamps: Bool = true
    /// Whether the frames are not evenly spaced at the nominal rate (phones record so): the
    /// average frame rate differs from the nominal one by more than 1 %, or (after a full scan)
    /// two shown frames lie more than half a frame off the nominal spacing. The farm numbers
    /// frames at ``frameRate``; to keep the source's timeline, such an input is re-cut with
    /// ``Recut/Timing/timestamps`` first.
    package var isVariableFrameRate: Bool = false
    /// Presentation times (``timeBase`` ticks) of the first and the last frame a player shows.
    package var timeline: ClosedRange<Int64> = 0...0
    /// Seconds from the first shown frame to the end of the last, which counts for one frame at
    /// ``frameRate`` (its stored duration is often a rounding remainder, or an edit list's).
    package var timelineDuration: Double {
        Double(timeline.upperBound - timeline.lowerBound) * timeBase.value + (frameRate.value > 0 ? 1 / frameRate.value : 0)
    }
    /// Frames at ``frameRate`` that cover the timeline: one per instant n / rate from the first
    /// shown frame up to the last one's, plus the last (exact in integers).
    package var timelineFrames: Int {
        let num = (timeline.upperBound - timeline.lowerBound) * Int64(timeBase.num) * Int64(frameRate.num)
        let den = Int64(timeBase.den) * Int64(frameRate.den)
        return den > 0 ? Int((num + den - 1) / den) + 1 : 0
    }
    /// Real video streams in the file (this one is the default, or the first).
    package var videoStreams: Int = 1
    /// Frames the container holds but a player never shows: an edit list hides them, or they
    /// come before the first keyframe (a stream cut mid-GOP) and cannot be decoded. ``frameCount``
    /// does not count them; the packet index lists them, so such an input is re-cut first
    /// (``RecutReason/hiddenFrames(_:)``).
    package var hiddenFrames: Int = 0
    /// Whether the container lists this stream in its header. An MPEG program stream lists its
    /// streams only as they are read, so the seek-and-demux fallback of ``SourceVideo`` cannot
    /// find it; set by ``SourceIndexer`` only (``MediaProbe`` leaves it true).
    package var listedInHeader: Bool = true

    package init(streamIndex: Int, codecName: String, width: Int, height: Int, pixelFormat: String, frameRate: Rational,
                timeBase: Rational, frameCount: Int, rotation: Int, hasPresentationTimestamps: Bool = true) {
        self.streamIndex = streamIndex
        self.codecName = codecName
        self.width = width
        self.height = height
        self.pixelFormat = pixelFormat
        self.frameRate = frameRate
        self.timeBase = timeBase
        self.frameCount = frameCount
        self.rotation = rotation
        self.hasPresentationTimestamps = hasPresentationTimestamps
    }

    /// Whether ``isVariableFrameRate`` holds for these average and nominal rates.
    static func variable(avg: Rational, nominal: Rational) -> Bool {
        avg.num > 0 && avg.den > 0 && nominal.num > 0 && nominal.den > 0 && abs(avg.value - nominal.value) > 0.01 * nominal.value
    }

    /// `frameCount / frameRate` seconds: the duration the farm works with.
    package var duration: Double { frameRate.value > 0 ? Double(frameCount) / frameRate.value : 0 }
}

/// What the prober found about a file's audio stream.
package struct AudioStreamInfo: Sendable, Hashable, Codable {
    package var streamIndex: Int
    package var codecName: String
    package var sampleRate: Int
    package var channels: Int
    /// Duration in seconds from the stream (or the container when the stream has none); nil if unknown.
    package var duration: Double?
}

/// A media file as the farm sees it.
package struct MediaInfo: Sendable, Hashable, Codable {
    package var path: String
    /// FFmpeg's demuxer name (`mov,mp4,m4a,3gp,3g2,mj2`, `wav`, `matroska,webm`).
    package var formatName: String
    /// The container's duration in seconds, if it states one (may differ from the video's).
    package var containerDuration: Double?
    package var fileSize: Int64
    package var video: VideoStreamInfo?
    package var audio: AudioStreamInfo?
}

/// Reads what a media file contains, with clear errors for unusable input.
///
/// The frame rate is the stream's average rate or its nominal `r_frame_rate`: when they agree
/// within 1 %, the one with the smaller denominator (concatenated files have averages such as
/// 6440960/257741 for 25 fps); else the nominal rate when it is plausible (≤ 240 fps): a variable-frame-rate
/// file (speaker-a.mp4: avg 1350/61, nominal 30) is treated as constant rate at its nominal rate,
/// which is how the farm numbers frames (absolute index / frame rate).
package enum MediaProbe {
    /// Largest width or height accepted.
    package static let maxDimension = 8192

    /// Probes `path`. With `requireVideo` (the default) a file without a video stream is an error.
    ///
    /// Counts video frames by demuxing every packet of the video stream (no decode).
    package static func probe(path: String, requireVideo: Bool = true) throws -> MediaInfo {
        try farmErrors {
            let input = try InputFile(path: path)
            var info = MediaInfo(path: path, formatName: input.formatName, containerDuration: input.duration,
                                 fileSize: input.fileSize, video: nil, audio: nil)
            if let a = input.audioStreamIndex() {
                let st = input.stream(a)
                var dur: Double? = st.duration.map { Double($0) * Rational(st.timeBase).value } ?? info.containerDuration
                // No duration anywhere in the headers (a WAV with no samples says none): an audio-only
                // file must at least hold one packet to count as a dub track.
                if dur == nil, input.videoStreamIndex() == nil, !Self.hasPacket(input, stream: a) { dur = 0 }
                info.audio = AudioStreamInfo(streamIndex: a, codecName: st.codecName, sampleRate: st.sampleRate,
                                             channels: st.channels, duration: dur)
            }
            if requireVideo, isStillImageFormat(input.formatName) {
                throw DubfarmError(.badInput, "\(input.name): a still image (\(input.formatName.split(separator: "_").first.map(String.init) ?? input.formatName)), not a video")
            }
            if let v = input.videoStreamIndex() {
                let scan = try VideoScan(input: input, streamIndex: v, verifyPositions: false)
                info.video = scan.info
            } else if requireVideo {
                throw DubfarmError(.badInput, "\(input.name): no video stream (the file holds \(input.describeStreams()))")
            }
            return info
        }
    }

    /// Whether the demuxer yields at least one packet of `stream` (reads from the current position).
    static func hasPacket(_ input: InputFile, stream: Int) -> Bool {
        let pkt = Packet()
        for _ in 0..<256 {
            guard (try? input.read(into: pkt, failure: { $0 })) == true else { return false }
            if pkt.streamIndex == stream { return true }
        }
        return true
    }

    /// Whether FFmpeg opened the file with a still-image demuxer (`png_pipe`, `jpeg_pipe`,
    /// `image2`…): a picture, not a video, even though it decodes as one video frame.
    static func isStillImageFormat(_ name: String) -> Bool {
        name == "image2" || name.hasSuffix("_pipe")
    }

    /// The frame rate rule described on ``MediaProbe``.
    static func chooseFrameRate(avg: Ratio, nominal: Ratio) -> Rational? {
        let a = Rational(avg), r = Rational(nominal)
        let aOK = a.num > 0 && a.den > 0, rOK = r.num > 0 && r.den > 0
        if aOK && rOK && abs(a.value - r.value) <= 0.01 * r.value {
            // They agree: take the simpler ratio (25 rather than 6440960/257741 from a concatenated file).
            return a.den <= r.den ? a : r
        }
        if aOK && !rOK { return a }
        if rOK && r.value <= 240 { return r }
        if aOK { return a }
        return nil
    }
}

/// One demux pass over a video stream: the packet index and the stream's facts.
struct VideoScan {
    var entries: [PacketIndex.Entry]
    var info: VideoStreamInfo
    var codec: CodecParameters

    /// Demuxes every packet of stream `streamIndex` (others are discarded by the demuxer).
    ///
    /// With `verifyPositions`, packets' bytes are compared with the file's bytes at the
    /// packet's position (every packet's; in MP4/MOV a sample of them, see below), so ``SourceVideo`` can later read packets with `pread`; on any mismatch
    /// (or a packet without a position) all positions are set to -1 (read by demuxing instead).
    init(input: InputFile, streamIndex v: Int, verifyPositions: Bool) throws {
        let name = input.name
        let st = input.stream(v)
        let codecName = st.codecName
        let width = st.width, height = st.height
        guard width > 0, height > 0 else {
            throw DubfarmError(.badInput, "\(name): the video stream has no picture size (\(width)x\(height)); the file is damaged")
        }
        guard width <= MediaProbe.maxDimension, height <= MediaProbe.maxDimension else {
            throw DubfarmError(.badInput, "\(name): the video is \(width)x\(height), larger than the \(MediaProbe.maxDimension) pixel limit")
        }
        guard st.hasDecoder else {
            throw DubfarmError(.unsupported, "\(name): video codec '\(codecName)' is not supported (no decoder in this FFmpeg build)")
        }
        guard let fps = MediaProbe.chooseFrameRate(avg: st.averageFrameRate, nominal: st.nominalFrameRate) else {
            // An MP4 track with no samples has neither frames nor a rate: say which it is.
            if st.headerFrameCount == 0 {
                throw DubfarmError(.badInput, "\(name): the video stream is empty (it has no frames)")
            }
            throw DubfarmError(.badInput, "\(name): the video stream states no frame rate")
        }
        let rotation = st.rotation.map { ((Int($0.rounded()) % 360) + 360) % 360 } ?? 0

        input.discardAll(except: v)
        var entries: [PacketIndex.Entry] = []
        let headerFrames = st.headerFrameCount
        entries.reserveCapacity(max(headerFrames, 0) + 16)
        let pkt = Packet()
        var verify = verifyPositions
        var reliable = verifyPositions
        var fd: Int32 = -1
        if verify {
            fd = open(input.path, O_RDONLY | O_CLOEXEC)
            if fd < 0 { verify = false; reliable = false }
        }
        defer { if fd >= 0 { close(fd) } }
        var scratch = [UInt8](repeating: 0, count: 1 << 20)
        // MP4/MOV positions come straight from the sample tables (chunk offsets and sample
        // sizes) and are exact by construction: check a sample of them (every keyframe and
        // every 32nd packet), which catches a file changed under us or a demuxer bug without
        // reading the whole file twice. Other containers (Matroska laces, streams) are checked
        // packet by packet.
        let sampled = input.formatName.hasPrefix("mov")
        var lastPTS: Int64 = 0, lastDuration: Int64 = 0
        var missingPTS = false
        var hidden = 0
        var shown: [Int64] = []   // presentation times of the frames a player shows
        var keyframeSeen = false
        while try input.read(into: pkt, failure: { "\(name): the file is damaged or truncated after \(entries.count) video frames (\($0))" }) {
            guard pkt.streamIndex == v else { continue }
            if pkt.isCorrupt {
                throw DubfarmError(.badInput, "\(name): video frame \(entries.count) is damaged or cut short; the file is truncated")
            }
            if pkt.position >= 0 && pkt.position + Int64(pkt.size) > input.fileSize {
                throw DubfarmError(.badInput, "\(name): the file is truncated (video frame \(entries.count) lies past its end)")
            }
            if pkt.pts == noTimestamp { missingPTS = true }
            let pts: Int64 = pkt.pts != noTimestamp ? pkt.pts
                : (pkt.dts != noTimestamp ? pkt.dts : (entries.isEmpty ? 0 : lastPTS + max(lastDuration, 1)))
            let dts: Int64 = pkt.dts != noTimestamp ? pkt.dts : pts
            lastPTS = pts
            lastDuration = pkt.duration
            keyframeSeen = keyframeSeen || pkt.isKey
            if pkt.isDiscarded || !keyframeSeen {
                hidden += 1
            } else {
                shown.append(pts)
            }
            if verify && (!sampled || pkt.position < 0 || pkt.isKey || entries.count % 32 == 0) {
                if !pkt.matchesFile(fd, scratch: &scratch) {
                    reliable = false
                    verify = false
                }
            }
            entries.append(PacketIndex.Entry(pts: pts, dts: dts, duration: pkt.duration, position: pkt.position,
                                             size: Int32(pkt.size), isKey: pkt.isKey))
        }
        guard !shown.isEmpty else {
            throw DubfarmError(.badInput, "\(name): the video stream holds no frames")
        }
        if headerFrames > 0 && entries.count < headerFrames && input.formatName.hasPrefix("mov") {
            throw DubfarmError(.badInput, "\(name): the file is truncated: its header lists \(headerFrames) video frames, only \(entries.count) are present")
        }
        if verifyPositions && !reliable {
            for i in entries.indices { entries[i].position = -1 }
        }
        self.entries = entries
        var parameters = st.video
        parameters.frameRate = Ratio(fps)
        self.codec = CodecParameters(parameters)
        self.info = VideoStreamInfo(streamIndex: v, codecName: codecName, width: width, height: height,
                                    pixelFormat: st.pixelFormat, frameRate: fps, timeBase: Rational(st.timeBase),
                                    frameCount: entries.count - hidden, rotation: rotation, hasPresentationTimestamps: !missingPTS)
        self.info.hiddenFrames = hidden
        self.info.videoStreams = input.videoStreamIndices().count
        shown.sort()
        let tb = Rational(st.timeBase)
        self.info.timeline = shown[0]...shown[shown.count - 1]
        // Spacing of the shown frames, in units of the nominal frame duration: 1 ± ½ when even.
        let ticksPerFrame = Double(fps.den) * Double(tb.den) / (Double(fps.num) * Double(tb.num))
        let uneven = !missingPTS && zip(shown, shown.dropFirst()).contains { abs(Double($1 - $0) / ticksPerFrame - 1) > 0.5 }
        self.info.isVariableFrameRate = uneven
            || VideoStreamInfo.variable(avg: Rational(st.averageFrameRate), nominal: Rational(st.nominalFrameRate))
    }
}

/// Builds a source video's packet index: one demux pass over the video stream, no decode.
package enum SourceIndexer {
    /// Indexes `path`'s video stream.
    ///
    /// Entries carry pts (dts when a packet has none), dts, duration, byte position, size and
    /// the keyframe flag, in decode order. Positions are verified against the file's bytes; when
    /// they cannot be trusted (some Matroska files, streams without positions) every position
    /// is -1 and ``SourceVideo`` demuxes instead of reading byte ranges.
    package static func index(path: String) throws -> (codec: CodecParameters, index: PacketIndex, info: VideoStreamInfo) {
        try farmErrors {
            let input = try InputFile(path: path)
            guard let v = input.videoStreamIndex() else {
                throw DubfarmError(.badInput, "\(input.name): no video stream (the file holds \(input.describeStreams()))")
            }
            var scan = try VideoScan(input: input, streamIndex: v, verifyPositions: true)
            if scan.entries.contains(where: { $0.position < 0 }) {
                // Tasks will be cut by seeking and demuxing, which opens the file without probing
                // its streams: it must find this one by its header alone.
                scan.info.listedInHeader = (try? InputFile(path: path, findStreamInfo: false).videoStreamIndex()) == v
            }
            return (scan.codec, PacketIndex(entries: scan.entries), scan.info)
        }
    }
}
