import CFFmpeg
#if canImport(Glibc)
import Glibc
#endif

/// What a decoder or a muxer needs to know about a video stream: libav*'s codec parameters in
/// Swift types (MediaPipeline maps them to the farm's `CodecParameters`).
package struct VideoParameters: Sendable, Hashable {
    /// FFmpeg's codec name (`h264`).
    package var codecName: String
    /// Out-of-band codec headers (SPS/PPS for H.264 in MP4).
    package var extradata: [UInt8]
    package var width: Int
    package var height: Int
    /// FFmpeg's pixel format name (`yuv420p`).
    package var pixelFormat: String
    package var timeBase: Ratio
    package var frameRate: Ratio
    package var sampleAspect: Ratio
    package var profile: Int
    package var level: Int
    /// libav*'s enum values for the colour description, carried through unchanged.
    package var colorRange: Int
    package var colorSpace: Int
    package var colorPrimaries: Int
    package var colorTransfer: Int

    package init(codecName: String, extradata: [UInt8], width: Int, height: Int, pixelFormat: String, timeBase: Ratio,
                 frameRate: Ratio, sampleAspect: Ratio, profile: Int, level: Int, colorRange: Int, colorSpace: Int,
                 colorPrimaries: Int, colorTransfer: Int) {
        self.codecName = codecName
        self.extradata = extradata
        self.width = width
        self.height = height
        self.pixelFormat = pixelFormat
        self.timeBase = timeBase
        self.frameRate = frameRate
        self.sampleAspect = sampleAspect
        self.profile = profile
        self.level = level
        self.colorRange = colorRange
        self.colorSpace = colorSpace
        self.colorPrimaries = colorPrimaries
        self.colorTransfer = colorTransfer
    }

    /// Writes these parameters into `par` (a video stream's), replacing its extradata.
    func fill(_ par: UnsafeMutablePointer<AVCodecParameters>, what: String) throws {
        guard let d = avcodec_descriptor_get_by_name(codecName) else {
            throw FFmpegError(.unsupported, "\(what): unknown video codec '\(codecName)'")
        }
        par.pointee.codec_type = AVMEDIA_TYPE_VIDEO
        par.pointee.codec_id = d.pointee.id
        par.pointee.codec_tag = 0
        if par.pointee.extradata != nil { av_freep(&par.pointee.extradata) }
        par.pointee.extradata_size = 0
        if !extradata.isEmpty {
            guard let buf = av_mallocz(extradata.count + Int(AV_INPUT_BUFFER_PADDING_SIZE)) else {
                throw FFmpegError(.internalError, "\(what): out of memory")
            }
            extradata.withUnsafeBufferPointer { _ = memcpy(buf, $0.baseAddress!, $0.count) }
            par.pointee.extradata = buf.assumingMemoryBound(to: UInt8.self)
            par.pointee.extradata_size = Int32(extradata.count)
        }
        par.pointee.width = Int32(width)
        par.pointee.height = Int32(height)
        par.pointee.format = av_get_pix_fmt(pixelFormat).rawValue
        par.pointee.sample_aspect_ratio = sampleAspect.av
        par.pointee.profile = Int32(profile)
        par.pointee.level = Int32(level)
        par.pointee.color_range = AVColorRange(rawValue: UInt32(colorRange))
        par.pointee.color_space = AVColorSpace(rawValue: UInt32(colorSpace))
        par.pointee.color_primaries = AVColorPrimaries(rawValue: UInt32(colorPrimaries))
        par.pointee.color_trc = AVColorTransferCharacteristic(rawValue: UInt32(colorTransfer))
    }
}

/// A stream of an ``InputFile`` as its headers describe it.
package struct StreamInfo: Sendable, Hashable {
    /// `video`, `audio`, `subtitle`, `data`…
    package var mediaType: String
    /// FFmpeg's codec name (`h264`, `aac`).
    package var codecName: String
    /// Whether this FFmpeg build can decode it.
    package var hasDecoder: Bool
    /// A picture attached as cover art, not a video.
    package var isAttachedPicture: Bool
    package var width: Int
    package var height: Int
    /// FFmpeg's pixel format name, for video.
    package var pixelFormat: String
    package var sampleRate: Int
    package var channels: Int
    package var timeBase: Ratio
    /// The average frame rate (`avg_frame_rate`) and the nominal one (`r_frame_rate`).
    package var averageFrameRate: Ratio
    package var nominalFrameRate: Ratio
    /// The stream's duration in its time base, when the headers state one.
    package var duration: Int64?
    /// The frame count the headers state (0: none stated).
    package var headerFrameCount: Int
    /// Rotation from the display matrix in degrees, counter-clockwise (as ffprobe reports it).
    package var rotation: Double?
    /// The codec parameters of a video stream, given the frame rate the caller settled on.
    package var video: VideoParameters

    package var isVideo: Bool { mediaType == "video" && !isAttachedPicture }

    init(_ st: UnsafeMutablePointer<AVStream>) {
        let par = st.pointee.codecpar.pointee
        mediaType = av_get_media_type_string(par.codec_type).map { String(cString: $0) } ?? "unknown"
        codecName = String(cString: avcodec_get_name(par.codec_id))
        hasDecoder = avcodec_find_decoder(par.codec_id) != nil
        isAttachedPicture = (st.pointee.disposition & AV_DISPOSITION_ATTACHED_PIC) != 0
        width = Int(par.width)
        height = Int(par.height)
        pixelFormat = par.codec_type == AVMEDIA_TYPE_VIDEO ? pixelFormatName(AVPixelFormat(rawValue: par.format)) : ""
        sampleRate = Int(par.sample_rate)
        channels = Int(par.ch_layout.nb_channels)
        timeBase = Ratio(st.pointee.time_base)
        averageFrameRate = Ratio(st.pointee.avg_frame_rate)
        nominalFrameRate = Ratio(st.pointee.r_frame_rate)
        duration = st.pointee.duration > 0 && st.pointee.duration != noPTS ? st.pointee.duration : nil
        headerFrameCount = Int(st.pointee.nb_frames)
        var degrees = 0.0
        rotation = cffmpeg_stream_rotation(st, &degrees) != 0 ? degrees : nil
        let extradata: [UInt8] = (par.extradata != nil && par.extradata_size > 0)
            ? [UInt8](UnsafeBufferPointer(start: par.extradata, count: Int(par.extradata_size))) : []
        video = VideoParameters(
            codecName: codecName, extradata: extradata, width: width, height: height, pixelFormat: pixelFormat,
            timeBase: timeBase, frameRate: averageFrameRate, sampleAspect: Ratio(par.sample_aspect_ratio),
            profile: Int(par.profile), level: Int(par.level), colorRange: Int(par.color_range.rawValue),
            colorSpace: Int(par.color_space.rawValue), colorPrimaries: Int(par.color_primaries.rawValue),
            colorTransfer: Int(par.color_trc.rawValue))
    }
}

/// An opened input file (`AVFormatContext`), closed on deinit. Not thread-safe: one owner at a time.
package final class InputFile {
    let ctx: UnsafeMutablePointer<AVFormatContext>
    package let path: String
    /// The file's name (last path component), as errors say it.
    package let name: String
    package let fileSize: Int64

    /// Opens `path`, with clear errors for a missing, empty or unreadable file. With
    /// `findStreamInfo`, libavformat also decodes a little of each stream to fill in what the
    /// headers leave out (frame rates of raw streams, for one).
    package init(path: String, findStreamInfo: Bool = true) throws {
        _ = ffmpegSetup
        let name = fileName(path)
        var st = stat()
        if stat(path, &st) != 0 {
            let e = errno
            if e == ENOENT { throw FFmpegError(.notFound, "\(name): file not found") }
            throw FFmpegError(.io, "\(name): cannot read the file (\(String(cString: strerror(e))))")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw FFmpegError(.invalidData, "\(name): not a regular file")
        }
        guard st.st_size > 0 else { throw FFmpegError(.invalidData, "\(name): the file is empty") }
        var c: UnsafeMutablePointer<AVFormatContext>? = nil
        cffmpeg_clear_last_log()
        let r = avformat_open_input(&c, path, nil, nil)
        guard r >= 0, let c else {
            throw FFmpegError(.invalidData, "\(name): not a media file FFmpeg can read, or it is damaged or truncated (\(avErrorReason(r)))")
        }
        self.ctx = c
        self.path = path
        self.name = name
        self.fileSize = Int64(st.st_size)
        if findStreamInfo {
            cffmpeg_clear_last_log()
            let r2 = avformat_find_stream_info(c, nil)
            if r2 < 0 {
                throw FFmpegError(.invalidData, "\(name): cannot read the streams of the file; it is damaged or not a media file (\(avErrorReason(r2)))")
            }
        }
    }

    deinit {
        var c: UnsafeMutablePointer<AVFormatContext>? = ctx
        avformat_close_input(&c)
    }

    /// FFmpeg's demuxer name (`mov,mp4,m4a,3gp,3g2,mj2`, `matroska,webm`, `wav`).
    package var formatName: String { String(cString: ctx.pointee.iformat.pointee.name) }
    /// The container's duration in seconds, if it states one.
    package var duration: Double? {
        ctx.pointee.duration > 0 ? Double(ctx.pointee.duration) / Double(AV_TIME_BASE) : nil
    }
    package var streamCount: Int { Int(ctx.pointee.nb_streams) }
    /// Stream `i` as its headers describe it.
    package func stream(_ i: Int) -> StreamInfo { StreamInfo(avStream(i)) }
    func avStream(_ i: Int) -> UnsafeMutablePointer<AVStream> { ctx.pointee.streams[i]! }

    /// The real video streams (cover art excluded), in file order.
    package func videoStreamIndices() -> [Int] {
        (0..<streamCount).filter { i in
            let s = avStream(i)
            return s.pointee.codecpar.pointee.codec_type == AVMEDIA_TYPE_VIDEO && (s.pointee.disposition & AV_DISPOSITION_ATTACHED_PIC) == 0
        }
    }

    /// The video stream a player shows: the one marked default when several are, else the first
    /// real video stream (cover art excluded), if any.
    package func videoStreamIndex() -> Int? {
        let video = videoStreamIndices()
        return video.first { (avStream($0).pointee.disposition & AV_DISPOSITION_DEFAULT) != 0 } ?? video.first
    }

    /// The best audio stream, if any.
    package func audioStreamIndex() -> Int? {
        let r = av_find_best_stream(ctx, AVMEDIA_TYPE_AUDIO, -1, -1, nil, 0)
        return r >= 0 ? Int(r) : nil
    }

    /// The streams in words, for errors: `video (h264), audio (aac)`.
    package func describeStreams() -> String {
        if streamCount == 0 { return "no streams" }
        return (0..<streamCount).map { i in
            let s = stream(i)
            return "\(s.mediaType) (\(s.codecName))"
        }.joined(separator: ", ")
    }

    /// Makes the demuxer skip every stream but `keep`.
    package func discardAll(except keep: Int) {
        for i in 0..<streamCount where i != keep { avStream(i).pointee.discard = AVDISCARD_ALL }
    }

    /// Reads the next packet into `packet`; false at the end of the file. A failure throws
    /// `.invalidData` with the message `failure` makes of libav*'s reason.
    package func read(into packet: Packet, failure: (_ reason: String) -> String) throws -> Bool {
        av_packet_unref(packet.p)
        let r = av_read_frame(ctx, packet.p)
        if r == averrorEOF { return false }
        if r < 0 { throw FFmpegError(.invalidData, failure(avErrorString(r))) }
        return true
    }

    /// Seeks stream `stream` to the keyframe at or before decode time `dts`; false when the
    /// demuxer cannot.
    package func seek(stream: Int, toKeyframeBefore dts: Int64) -> Bool {
        av_seek_frame(ctx, Int32(stream), dts, AVSEEK_FLAG_BACKWARD) >= 0
    }

    /// Seeks back to the start of the file.
    package func rewind() throws {
        let r = avformat_seek_file(ctx, -1, Int64.min, 0, 0, 0)
        guard r >= 0 else { throw FFmpegError(.io, "\(name): cannot seek (\(avErrorString(r)))") }
    }

    /// Entries in the demuxer's own index of `stream` (for MP4, one per sample of its tables).
    package func indexEntryCount(stream: Int) -> Int {
        Int(avformat_index_get_entries_count(avStream(stream)))
    }

    /// Where the last entry of the demuxer's index of `stream` lies in the file.
    package func lastIndexEntry(stream: Int) -> (position: Int64, size: Int)? {
        let st = avStream(stream)
        let n = avformat_index_get_entries_count(st)
        guard n > 0, let e = avformat_index_get_entry(st, n - 1) else { return nil }
        return (e.pointee.pos, Int(e.pointee.size))
    }
}
