// TrainingData: the training-set builder behind `dubfarm dataset build` (format: docs/dataset.md).
//
//   clip ──▶ MediaProbe (frame rate, audio present?) ──▶ DubAudio.decodePCM ──▶ ModelInputs.logMel
//        ──▶ VideoDecoder (rgb24, in order) ──▶ FaceTracker (the dub stage's analyzer and parameters)
//        ──▶ ModelInputs.compute (crop + mel window: the dub stage's own function)
//        ──▶ ShardWriter (safetensors shards of ≤ 512 frames) ──▶ index.json
import DubfarmCore
import Foundation

/// `index.json` of a dataset directory (format ``DatasetIndex/format``).
public struct DatasetIndex: Codable, Sendable, Hashable {
    /// The format written: `dubfarm-dataset/1`.
    public static let format = "dubfarm-dataset/1"
    /// The index's file name in the dataset directory.
    public static let fileName = "index.json"

    public var format: String
    /// Model configuration name whose crop size the crops have.
    public var config: String
    /// Crop side `S`.
    public var imageSize: Int
    public var melBins: Int
    public var melFrames: Int
    public var clips: [Clip]
    /// Speaker names; the shards' `speaker` tensor indexes this list (first-appearance order).
    public var speakers: [String]
    public var shards: [Shard]
    /// Inputs that were not used, and why.
    public var skipped: [Skipped]

    /// One clip that was written.
    public struct Clip: Codable, Sendable, Hashable {
        /// Index in ``DatasetIndex/clips``; the shards' `clip` tensor.
        public var id: Int
        /// The file stem.
        public var name: String
        public var speaker: String
        /// The input path as given.
        public var source: String
        /// `[num, den]`: the frame rate frames are numbered at (the farm's, from ``MediaProbe``).
        public var frameRate: [Int]
        /// Whether the frames are unevenly spaced (``VideoStreamInfo/isVariableFrameRate``): they
        /// are still numbered at `frameRate`, as the farm numbers them, so picture and mel windows
        /// drift apart over the clip.
        public var variableFrameRate: Bool
        /// Frame size in pixels (the `transform` tensor maps crops into it).
        public var width: Int
        public var height: Int
        /// Frames decoded.
        public var frames: Int
        /// Frames where the tracker has a face: the frames written.
        public var framesWithFace: Int
        /// Of those, frames with the tracker's own landmarks (not bridged over a detection miss).
        public var framesWithLandmarks: Int
        /// Seconds of the clip's audio track.
        public var audioSeconds: Double
        public var shards: [String]
    }

    /// One shard file: frames of one clip, in frame order.
    public struct Shard: Codable, Sendable, Hashable {
        public var file: String
        public var clip: Int
        public var count: Int
    }

    /// An input left out.
    public struct Skipped: Codable, Sendable, Hashable {
        public var source: String
        public var reason: String
    }

    /// Reads a dataset directory's index.
    public static func load(directory: URL) throws -> DatasetIndex {
        let url = directory.appendingPathComponent(fileName)
        do {
            return try JSONDecoder().decode(DatasetIndex.self, from: Data(contentsOf: url))
        } catch {
            throw DubfarmError(.badInput, "cannot read \(url.path): \(error.localizedDescription)")
        }
    }

    /// The index as written: pretty-printed, keys sorted.
    public func encoded() throws -> Data {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try e.encode(self)
    }
}

/// Clip name → speaker name, from a TSV file: `file stem<TAB>speaker`, `#` comments, blank lines
/// ignored. Clips not listed are their own speaker.
public struct SpeakerMap: Sendable, Hashable {
    public var speakers: [String: String]

    public init(_ speakers: [String: String] = [:]) { self.speakers = speakers }

    /// The speaker of a clip.
    public func speaker(of clip: String) -> String { speakers[clip] ?? clip }

    /// Parses TSV text; `name` is used in error messages (`name:line: why`).
    public static func parse(_ text: String, name: String) throws -> SpeakerMap {
        var map: [String: String] = [:]
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespacesAndNewlines)
            if line.isEmpty || line.hasPrefix("#") { continue }
            let fields = raw.split(separator: "\t", omittingEmptySubsequences: false)
                .map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
            guard fields.count == 2, !fields[0].isEmpty, !fields[1].isEmpty else {
                throw DubfarmError(.badInput, "\(name):\(i + 1): expected 'file stem<TAB>speaker', got '\(line)'")
            }
            if let old = map[fields[0]], old != fields[1] {
                throw DubfarmError(.badInput, "\(name):\(i + 1): clip '\(fields[0])' is given two speakers, '\(old)' and '\(fields[1])'")
            }
            map[fields[0]] = fields[1]
        }
        return SpeakerMap(map)
    }

    /// Reads a TSV file (see ``parse(_:name:)``).
    public static func load(path: String) throws -> SpeakerMap {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw DubfarmError(.notFound, "cannot read the speakers file \(path): \(error.localizedDescription)")
        }
        return try parse(text, name: path)
    }
}
