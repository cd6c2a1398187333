import DubfarmCore
import FFmpeg

// Where the FFmpeg wrappers' types meet the farm's: errors, fractions, codec parameters, pictures.

extension DubfarmError {
    /// The farm's error for a libav* failure, with the same message.
    init(_ e: FFmpegError) {
        let code: DubfarmError.Code = switch e.code {
        case .notFound: .notFound
        case .io: .io
        case .diskFull: .diskFull
        case .invalidData: .badInput
        case .unsupported: .unsupported
        case .configuration: .configuration
        case .internalError: .internalError
        }
        self.init(code, e.message)
    }
}

/// Runs `body`, turning an ``FFmpegError`` into the ``DubfarmError`` with the same message;
/// every public operation of this module runs inside it, so callers see the farm's errors only.
func farmErrors<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let e as FFmpegError {
        throw DubfarmError(e)
    }
}

extension Rational {
    init(_ r: Ratio) { self.init(r.num, r.den) }
}

extension Ratio {
    init(_ r: Rational) { self.init(r.num, r.den) }
}

extension CodecParameters {
    init(_ p: VideoParameters) {
        self.init(codecName: p.codecName, extradata: p.extradata, width: p.width, height: p.height,
                  pixelFormat: p.pixelFormat, timeBase: Rational(p.timeBase), frameRate: Rational(p.frameRate),
                  sampleAspect: Rational(p.sampleAspect), profile: p.profile, level: p.level,
                  colorRange: p.colorRange, colorSpace: p.colorSpace, colorPrimaries: p.colorPrimaries,
                  colorTransfer: p.colorTransfer)
    }
}

extension VideoParameters {
    init(_ p: CodecParameters) {
        self.init(codecName: p.codecName, extradata: p.extradata, width: p.width, height: p.height,
                  pixelFormat: p.pixelFormat, timeBase: Ratio(p.timeBase), frameRate: Ratio(p.frameRate),
                  sampleAspect: Ratio(p.sampleAspect), profile: p.profile, level: p.level,
                  colorRange: p.colorRange, colorSpace: p.colorSpace, colorPrimaries: p.colorPrimaries,
                  colorTransfer: p.colorTransfer)
    }
}

extension Picture.Layout {
    init(_ l: VideoFrame.Layout) {
        switch l {
        case .rgb24: self = .rgb24
        case .yuv420p: self = .yuv420p
        }
    }
}

extension VideoFrame {
    /// `picture` as frame `index` (the planes are shared, not copied).
    init(_ picture: Picture, index: Int) {
        let layout: VideoFrame.Layout = picture.layout == .rgb24 ? .rgb24 : .yuv420p
        self.init(width: picture.width, height: picture.height, layout: layout, planes: picture.planes,
                  strides: picture.strides, index: index)
    }

    /// The frame's pixels as a ``Picture`` (the planes are shared, not copied).
    var picture: Picture {
        Picture(width: width, height: height, layout: Picture.Layout(layout), planes: planes, strides: strides)
    }
}

extension EncodedPacket {
    /// `packet`'s timing and a copy of its payload.
    init(_ packet: Packet) {
        self.init(pts: packet.pts, dts: packet.dts, duration: packet.duration, isKey: packet.isKey, data: packet.bytes)
    }
}

extension Packet {
    /// Loads a copy of `packet`.
    func load(_ packet: EncodedPacket) throws {
        try load(data: packet.data, pts: packet.pts, dts: packet.dts, duration: packet.duration, isKey: packet.isKey)
    }
}
