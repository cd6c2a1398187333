import Foundation

/// Where the face crop lies in the frame: an oriented square, centre + half side + angle.
///
/// This is the quantity the tracker smooths over time; ``transform(cropSize:)`` turns it into the
/// similarity transform the warp uses.
package struct FaceAlignment: Sendable, Hashable {
    /// Centre of the square, frame pixels.
    package var center: Point2
    /// Half the side of the square, frame pixels.
    package var halfSide: Double
    /// Rotation of the square's x axis, radians (positive turns x towards +y, i.e. clockwise on screen).
    package var angle: Double

    package init(center: Point2, halfSide: Double, angle: Double) {
        self.center = center
        self.halfSide = halfSide
        self.angle = angle
    }

    /// Crop pixels → frame pixels for a `cropSize × cropSize` crop.
    package func transform(cropSize: Int) -> SimilarityTransform {
        SimilarityTransform(center: center, halfSide: halfSide, angle: angle, cropSize: cropSize)
    }

    /// The axis-aligned bounds of the square.
    package var bounds: FaceBox {
        let c = abs(cos(angle)), s = abs(sin(angle))
        let h = halfSide * (c + s)
        return FaceBox(x: center.x - h, y: center.y - h, width: 2 * h, height: 2 * h)
    }

    /// FFHQ alignment (the `recreate_aligned_images` step of the FFHQ dataset tools) from the
    /// 68 iBUG landmarks:
    ///
    ///     eye_to_eye   = mean(right eye 42..47) − mean(left eye 36..41)
    ///     eye_to_mouth = mean(mouth corners 48, 54) − mean of the eye centres
    ///     x = eye_to_eye − rot90(eye_to_mouth), normalised, times
    ///         max(2.0·|eye_to_eye|, 1.8·|eye_to_mouth|)
    ///     centre = eye average + 0.1·eye_to_mouth, half side = |x|, angle = atan2(x)
    ///
    /// so the crop's side is `2·max(2·|eye_to_eye|, 1.8·|eye_to_mouth|)`: about four eye
    /// distances, the face occupying its centre with hair and chin inside. In the crop the eyes
    /// sit near 47% of the height and the mouth near 72%.
    package static func ffhq(landmarks lm: [Point2]) -> FaceAlignment {
        precondition(lm.count >= 68, "FFHQ alignment needs the 68 iBUG landmarks")
        let eyeLeft = Point2.mean(lm[36..<42]), eyeRight = Point2.mean(lm[42..<48])
        let eyeAvg = (eyeLeft + eyeRight) * 0.5
        let eyeToEye = eyeRight - eyeLeft
        let mouthAvg = (lm[48] + lm[54]) * 0.5
        let eyeToMouth = mouthAvg - eyeAvg
        var x = Point2(eyeToEye.x + eyeToMouth.y, eyeToEye.y - eyeToMouth.x)
        let len = max(x.length, 1e-9)
        x = x * (1 / len)
        let half = max(eyeToEye.length * 2.0, eyeToMouth.length * 1.8)
        return FaceAlignment(center: eyeAvg + eyeToMouth * 0.1, halfSide: half, angle: atan2(x.y, x.x))
    }

    /// Fallback without landmarks: an upright square on the detector's box, its centre moved down
    /// by ``boxCenterShift`` of the box side and its half side ``boxHalfSide`` box sides — fitted
    /// to the FFHQ squares of the Haar boxes in the test clips, so the two crops roughly agree.
    package static func fromBox(_ box: FaceBox) -> FaceAlignment {
        let side = (box.width + box.height) / 2
        return FaceAlignment(center: Point2(box.centerX, box.centerY + boxCenterShift * side),
                             halfSide: boxHalfSide * side, angle: 0)
    }

    package static let boxCenterShift = 0.12
    package static let boxHalfSide = 0.85
}
