import FaceAnalysis
import FarmTestSupport
import Foundation

/// Models shared by the tests, loaded once per process.
enum TestModels {
    static let cascadeAvailable = FileManager.default.fileExists(atPath: HaarCascade.defaultPath)
    static let landmarksAvailable = FileManager.default.fileExists(atPath: ShapePredictor.defaultPath)
    static let mediaAvailable = FileManager.default.fileExists(atPath: TestMedia.path("speaker-b.mp4"))
    static let faceReady = cascadeAvailable && landmarksAvailable && mediaAvailable

    /// Debug builds evaluate ~20× slower; there the video tests look at the first frames only
    /// (`make test` runs release, where every frame is used).
    static let debugFrameLimit: Int? = {
        #if DEBUG
        return 30
        #else
        return nil
        #endif
    }()




    static let analyzer: FaceAnalyzer = {
        do {
            return try FaceAnalyzer.load()
        } catch {
            fatalError("loading face models: \(error)")
        }
    }()
}

/// Peak signal-to-noise ratio in dB of two equally long byte arrays over the selected indices.
func psnr(_ a: [UInt8], _ b: [UInt8], where include: (Int) -> Bool) -> Double {
    var se = 0.0, n = 0
    for i in a.indices where include(i) {
        let d = Double(a[i]) - Double(b[i])
        se += d * d
        n += 1
    }
    guard n > 0, se > 0 else { return .infinity }
    return 10 * log10(255 * 255 / (se / Double(n)))
}

func median(_ v: [Double]) -> Double {
    let s = v.sorted()
    return s.isEmpty ? .nan : (s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2)
}
