/// A decoded picture, owned by Swift.
package struct VideoFrame: Sendable {
    /// How the planes are laid out.
    package enum Layout: String, Sendable, Hashable {
        /// Three planes, chroma halved in both directions.
        case yuv420p
        /// One interleaved plane, 3 bytes per pixel.
        case rgb24
    }

    package var width: Int
    package var height: Int
    package var layout: Layout
    package var planes: [[UInt8]]
    /// Bytes per row of each plane.
    package var strides: [Int]
    /// Absolute frame index within the job's input video.
    package var index: Int

    package init(width: Int, height: Int, layout: Layout, planes: [[UInt8]], strides: [Int], index: Int) {
        self.width = width
        self.height = height
        self.layout = layout
        self.planes = planes
        self.strides = strides
        self.index = index
    }
}
