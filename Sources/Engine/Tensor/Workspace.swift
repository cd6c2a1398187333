/// A bump arena for the scratch tensors of one frame.
///
/// Every intermediate of a frame is carved out of the workspace; ``reset()`` hands all of it back
/// at once. The first frame may spill into extra chunks; the reset after it merges them into one
/// block of the high-water size, so from the second frame on a frame allocates nothing and a
/// worker's memory does not grow with the length of the video.
public final class Workspace: @unchecked Sendable {
    private var chunks: [(pointer: UnsafeMutablePointer<Float>, capacity: Int)] = []
    private var chunkIndex = 0
    private var offset = 0
    private var used = 0
    /// The most floats in use at once since creation.
    public private(set) var highWater = 0

    /// A workspace with an optional first block of `capacity` floats.
    public init(capacity: Int = 0) {
        if capacity > 0 { addChunk(capacity) }
    }

    deinit { for c in chunks { UnsafeMutableRawPointer(c.pointer).deallocate() } }

    private func addChunk(_ capacity: Int) {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: capacity * 4, alignment: 64)
        chunks.append((raw.bindMemory(to: Float.self, capacity: capacity), capacity))
    }

    /// Bytes reserved by the workspace.
    public var reservedBytes: Int { chunks.reduce(0) { $0 + $1.capacity } * 4 }

    /// Uninitialised scratch memory for `count` floats, 64-byte aligned.
    public func allocate(_ count: Int) -> UnsafeMutablePointer<Float> {
        let n = (max(count, 1) + 15) & ~15
        while chunkIndex < chunks.count, offset + n > chunks[chunkIndex].capacity {
            chunkIndex += 1
            offset = 0
        }
        if chunkIndex == chunks.count {
            addChunk(max(n, 1 << 18))
            offset = 0
        }
        let p = chunks[chunkIndex].pointer + offset
        offset += n
        used += n
        highWater = max(highWater, used)
        return p
    }

    /// An uninitialised scratch tensor.
    public func tensor(_ shape: [Int]) -> Tensor {
        Tensor(shape: shape, viewing: allocate(shape.reduce(1, *)))
    }

    /// A zero-filled scratch tensor.
    public func zeros(_ shape: [Int]) -> Tensor {
        let t = tensor(shape)
        t.data.initialize(repeating: 0, count: t.count)
        return t
    }

    /// Releases every scratch tensor (their views become invalid) and, if the last frame spilled
    /// over several chunks, replaces them with one block large enough for it.
    public func reset() {
        if chunks.count > 1 {
            for c in chunks { UnsafeMutableRawPointer(c.pointer).deallocate() }
            chunks.removeAll()
            addChunk(highWater + 16)
        }
        chunkIndex = 0
        offset = 0
        used = 0
    }
}
