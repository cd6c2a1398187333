/// A bump arena for the scratch tensors of one frame.
///
/// Every intermediate of a frame is carved out of the workspace; ``reset()`` hands all of it back
/// at once. The first frame may spill into extra chunks; the reset after it merges them into one
/// block of the high-water size, so from the second frame on a frame allocates nothing and a
/// worker's memory does not grow with the length of the video.
package final class Workspace: @unchecked Sendable {
    private var chunks: [(pointer: UnsafeMutablePointer<Float>, capacity: Int)] = []
    private var chunkIndex = 0
    private var offset = 0
    private var used = 0
    /// The most floats in use at once since creation.
    package private(set) var highWater = 0

    /// A workspace with an optional first block of `capacity` floats.
    package init(capacity: Int = 0) {
        if capacity > 0 { addChunk(capacity) }
    }

    deinit { for c in chunks { UnsafeMutableRawPointer(c.pointer).deallocate() } }

    private func addChunk(_ capacity: Int) {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: capacity * 4, alignment: 64)
        chunks.append((raw.bindMemory(to: Float.self, capacity: capacity), capacity))
    }

    /// Bytes reserved by the workspace.
    package var reservedBytes: Int { chunks.reduce(0) { $0 + $1.capacity } * 4 }

    /// Uninitialised scratch memory for `count` floats, 64-byte aligned.
    package func allocate(_ count: Int) -> UnsafeMutablePointer<Float> {
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

    /// A position in the arena to ``rewind(to:)`` to.
    package struct Mark: Sendable { let chunk: Int, offset: Int, used: Int }

    /// The current allocation position.
    package func mark() -> Mark { Mark(chunk: chunkIndex, offset: offset, used: used) }

    /// Releases everything allocated since `mark` (those views become invalid).
    package func rewind(to mark: Mark) {
        chunkIndex = mark.chunk
        offset = mark.offset
        used = mark.used
    }

    /// Runs `body` and keeps only its result: the scratch it used is released and the result is
    /// moved down to where the scratch began. Keeps a frame's peak memory near the largest single
    /// layer instead of the sum of all layers.
    package func scoped(_ body: () throws -> Tensor) rethrows -> Tensor {
        let m = mark()
        let r = try body()
        rewind(to: m)
        let out = tensor(r.shape)
        if out.data != r.data { UnsafeMutableRawPointer(out.data).copyMemory(from: r.data, byteCount: r.count * 4) }
        return out
    }

    /// An uninitialised scratch tensor.
    package func tensor(_ shape: [Int]) -> Tensor {
        Tensor(shape: shape, viewing: allocate(shape.reduce(1, *)))
    }

    /// A zero-filled scratch tensor.
    package func zeros(_ shape: [Int]) -> Tensor {
        let t = tensor(shape)
        t.data.initialize(repeating: 0, count: t.count)
        return t
    }

    /// Releases every scratch tensor (their views become invalid) and, if the last frame spilled
    /// over several chunks, replaces them with one block large enough for it.
    package func reset() {
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
