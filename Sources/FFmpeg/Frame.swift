import CFFmpeg

/// A decoded picture or block of audio samples (`AVFrame`), freed on deinit.
package final class Frame {
    let f: UnsafeMutablePointer<AVFrame>

    package init() {
        guard let f = av_frame_alloc() else { fatalError("out of memory allocating an AVFrame") }
        self.f = f
    }

    deinit {
        var q: UnsafeMutablePointer<AVFrame>? = f
        av_frame_free(&q)
    }

    package var width: Int { Int(f.pointee.width) }
    package var height: Int { Int(f.pointee.height) }
    /// The pixel format's name (`yuv420p`).
    package var pixelFormat: String { pixelFormatName(AVPixelFormat(rawValue: f.pointee.format)) }
    /// Whether the frame holds data (a decoded picture, or a reference made by ``reference(_:)``).
    package var hasData: Bool { f.pointee.data.0 != nil }
    /// Samples per channel of an audio frame.
    package var sampleCount: Int { Int(f.pointee.nb_samples) }

    /// The presentation timestamp handed to an encoder.
    package var pts: Int64 {
        get { f.pointee.pts }
        set { f.pointee.pts = newValue }
    }

    /// When a decoded frame is shown: the decoder's best estimate, else its pts (``noTimestamp``
    /// when neither is known).
    package var presentationTime: Int64 {
        f.pointee.best_effort_timestamp != noPTS ? f.pointee.best_effort_timestamp : f.pointee.pts
    }

    /// Asks the encoder to make this frame a keyframe (an IDR for x264), or leaves the choice to it.
    package var forcesKeyframe: Bool {
        get { f.pointee.pict_type == AV_PICTURE_TYPE_I }
        set { f.pointee.pict_type = newValue ? AV_PICTURE_TYPE_I : AV_PICTURE_TYPE_NONE }
    }

    /// Drops the data.
    package func unref() { av_frame_unref(f) }

    /// Makes this frame a new reference to `other`'s data (no copy).
    package func reference(_ other: Frame) throws {
        av_frame_unref(f)
        let r = av_frame_ref(f, other.f)
        guard r >= 0 else { throw FFmpegError(.internalError, "out of memory referencing a frame") }
    }

    func plane(_ i: Int) -> UnsafeMutablePointer<UInt8>? { cffmpeg_frame_plane(f, Int32(i)) }
    func linesize(_ i: Int) -> Int { Int(cffmpeg_frame_linesize(f, Int32(i))) }

    /// Gives the frame a writable picture of `format` at `width`×`height`: allocated when it has
    /// none of that shape, else made writable (copied if an encoder still holds it).
    func prepare(format: AVPixelFormat, width: Int, height: Int, what: String) throws {
        if f.pointee.data.0 == nil || f.pointee.format != format.rawValue || Int(f.pointee.width) != width || Int(f.pointee.height) != height {
            av_frame_unref(f)
            f.pointee.format = format.rawValue
            f.pointee.width = Int32(width)
            f.pointee.height = Int32(height)
            let r = av_frame_get_buffer(f, 0)
            guard r >= 0 else { throw FFmpegError(.internalError, "\(what): cannot allocate a frame (\(avErrorString(r)))") }
        } else {
            let r = av_frame_make_writable(f)
            guard r >= 0 else { throw FFmpegError(.internalError, "\(what): cannot allocate a frame (\(avErrorString(r)))") }
        }
    }
}
