/// What a worker measured while processing a segment.
package struct SegmentStats: Codable, Sendable, Hashable {
    package var frames: Int
    package var framesWithFace: Int
    package var framesSwapped: Int
    package var decodeSeconds: Double
    package var stageSeconds: Double
    package var encodeSeconds: Double
    package var totalSeconds: Double
    /// Milliseconds per frame of each step of the stage, in pipeline order (nil for stages that
    /// report none, and in results from older workers).
    package var steps: [StepTiming]?

    package init(frames: Int = 0, framesWithFace: Int = 0, framesSwapped: Int = 0, decodeSeconds: Double = 0,
                stageSeconds: Double = 0, encodeSeconds: Double = 0, totalSeconds: Double = 0, steps: [StepTiming]? = nil) {
        self.frames = frames
        self.framesWithFace = framesWithFace
        self.framesSwapped = framesSwapped
        self.decodeSeconds = decodeSeconds
        self.stageSeconds = stageSeconds
        self.encodeSeconds = encodeSeconds
        self.totalSeconds = totalSeconds
        self.steps = steps
    }
}

/// One step of a stage (`detect`, `lipsync`, …) and its milliseconds per frame over a segment.
package struct StepTiming: Codable, Sendable, Hashable {
    package var step: String
    package var msPerFrame: Double
    package init(step: String, msPerFrame: Double) {
        self.step = step
        self.msPerFrame = msPerFrame
    }
}
