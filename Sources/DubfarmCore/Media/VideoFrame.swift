/// A decoded picture, owned by Swift.
public struct VideoFrame: Sendable {
    /// How the planes are laid out.
    public enum Layout: String, Sendable, Hashable {
        /// Three planes, chroma halved in both directions.
        case yuv420p
        /// One interleaved plane, 3 bytes per pixel.
        case rgb24
    }

    public var width: Int
    public var height: Int
    public var layout: Layout
    public var planes: [[UInt8]]
    /// Bytes per row of each plane.
    public var strides: [Int]
    /// Absolute frame index within the job's input video.
    public var index: Int

    public init(width: Int, height: Int, layout: Layout, planes: [[UInt8]], strides: [Int], index: Int) {
        self.width = width
        self.height = height
        self.layout = layout
        self.planes = planes
        self.strides = strides
        self.index = index
    }
}
