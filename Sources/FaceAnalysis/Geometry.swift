import Foundation

/// An axis-aligned rectangle in pixel coordinates (x to the right, y down), floating point.
///
/// A pixel with index (i, j) covers `[i, i+1) × [j, j+1)`; a box from a detector covers the
/// pixels `x ..< x + width`, `y ..< y + height`.
package struct FaceBox: Sendable, Hashable, CustomStringConvertible {
    package var x: Double
    package var y: Double
    package var width: Double
    package var height: Double

    package init(x: Double, y: Double, width: Double, height: Double) {
        self.x = x
        self.y = y
        self.width = width
        self.height = height
    }

    package var centerX: Double { x + width / 2 }
    package var centerY: Double { y + height / 2 }
    package var maxX: Double { x + width }
    package var maxY: Double { y + height }
    package var area: Double { max(0, width) * max(0, height) }

    /// Intersection over union; 0 when either box is empty.
    package func iou(_ other: FaceBox) -> Double {
        let ix = max(0, min(maxX, other.maxX) - max(x, other.x))
        let iy = max(0, min(maxY, other.maxY) - max(y, other.y))
        let inter = ix * iy
        let union = area + other.area - inter
        return union > 0 ? inter / union : 0
    }

    /// The box scaled about the origin (to map between image resolutions).
    package func scaled(by s: Double) -> FaceBox {
        FaceBox(x: x * s, y: y * s, width: width * s, height: height * s)
    }

    /// The box grown (or shrunk, for negative `fraction`) by `fraction` of its size on every side.
    package func expanded(by fraction: Double) -> FaceBox {
        FaceBox(x: x - width * fraction, y: y - height * fraction,
                width: width * (1 + 2 * fraction), height: height * (1 + 2 * fraction))
    }

    package func contains(_ p: Point2) -> Bool {
        p.x >= x && p.x <= maxX && p.y >= y && p.y <= maxY
    }

    package var description: String {
        String(format: "(%.1f, %.1f, %.1f×%.1f)", x, y, width, height)
    }
}

/// A point in pixel coordinates.
package struct Point2: Sendable, Hashable {
    package var x: Double
    package var y: Double
    package init(_ x: Double, _ y: Double) {
        self.x = x
        self.y = y
    }
    package static func + (a: Point2, b: Point2) -> Point2 { Point2(a.x + b.x, a.y + b.y) }
    package static func - (a: Point2, b: Point2) -> Point2 { Point2(a.x - b.x, a.y - b.y) }
    package static func * (a: Point2, s: Double) -> Point2 { Point2(a.x * s, a.y * s) }
    package var length: Double { (x * x + y * y).squareRoot() }

    /// The mean of a non-empty list of points.
    package static func mean<C: Collection>(_ points: C) -> Point2 where C.Element == Point2 {
        var sx = 0.0, sy = 0.0
        for p in points {
            sx += p.x
            sy += p.y
        }
        let n = Double(Swift.max(points.count, 1))
        return Point2(sx / n, sy / n)
    }
}

/// A similarity transform (rotation, uniform scale, translation) from crop coordinates to image
/// coordinates: `image = [a -b; b a] · crop + (tx, ty)`.
///
/// Both coordinate systems are continuous with pixel (i, j) covering `[i, i+1) × [j, j+1)`, so the
/// centre of crop pixel (u, v) is `(u + 0.5, v + 0.5)`.
package struct SimilarityTransform: Sendable, Hashable {
    package var a: Double
    package var b: Double
    package var tx: Double
    package var ty: Double

    package init(a: Double, b: Double, tx: Double, ty: Double) {
        self.a = a
        self.b = b
        self.tx = tx
        self.ty = ty
    }

    /// The transform that maps an `size × size` crop onto the square centred at `center` with
    /// half-side `halfSide`, its x axis turned by `angle` radians (clockwise on screen, as y is down).
    package init(center: Point2, halfSide: Double, angle: Double, cropSize: Int) {
        let s = 2 * halfSide / Double(cropSize)
        a = s * cos(angle)
        b = s * sin(angle)
        // The crop centre (size/2, size/2) maps to `center`.
        let h = Double(cropSize) / 2
        tx = center.x - (a * h - b * h)
        ty = center.y - (b * h + a * h)
    }

    /// Scale factor from crop to image pixels.
    package var scale: Double { (a * a + b * b).squareRoot() }
    /// Rotation angle in radians.
    package var angle: Double { atan2(b, a) }

    package func apply(_ p: Point2) -> Point2 {
        Point2(a * p.x - b * p.y + tx, b * p.x + a * p.y + ty)
    }

    package var inverse: SimilarityTransform {
        let d = a * a + b * b
        let ia = a / d, ib = -b / d
        return SimilarityTransform(a: ia, b: ib, tx: -(ia * tx - ib * ty), ty: -(ib * tx + ia * ty))
    }
}
