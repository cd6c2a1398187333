// FFmpeg: owning Swift wrappers over libavformat, libavcodec, libswscale and libswresample:
// packets, frames, buffers, input and output files, decoders and encoders, the scaler and the
// resampler. It is the only module that sees a libav* pointer; none leaves it. It knows nothing
// of the farm: MediaPipeline builds probing, cutting, rendering and stitching on top of it and
// turns ``FFmpegError`` into the farm's errors.

/// A libav* call that failed, said in words a user can act on (the file is named where there is one).
package struct FFmpegError: Error, Sendable, CustomStringConvertible {
    /// What kind of failure it is.
    package enum Code: Sendable, Hashable {
        /// The file does not exist.
        case notFound
        /// The operating system refused a read or write.
        case io
        /// The disk (or the quota) is full.
        case diskFull
        /// The data is damaged, truncated or not media at all.
        case invalidData
        /// The data is valid but this FFmpeg build cannot handle it (no decoder, no conversion).
        case unsupported
        /// An encoder or format the caller asked for is missing or refuses its settings.
        case configuration
        /// Out of memory, or libav* broke a promise the wrapper relies on.
        case internalError
    }

    package var code: Code
    package var message: String

    package init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    package var description: String { message }
}
