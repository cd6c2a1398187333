import DubfarmCore
import DurableFiles
import FFmpeg

/// A packet bundle read into one FFmpeg buffer (a whole bundle file, or one record of a
/// ``ResultLog``); its packets are handed to the muxer as references into that buffer (no copy
/// per packet).
final class BundleFile {
    private let buffer: SharedBuffer
    let layout: PacketBundleLayout
    /// Where the bundle starts in the buffer (after a result record's header).
    private let start: Int

    /// Reads and parses the bundle file `path`, or, given `record`, that record of the result
    /// log `path` (its header must name the record's segment and lease). Throws `.notFound` for
    /// a missing file, `.io` for an unreadable one, `.protocolViolation` for a damaged one or
    /// a record that is not the one asked for.
    init(path: String, record: ResultRecord? = nil) throws {
        buffer = try MediaFile.withOpenFile(path) { fd, fileSize in
            var size = fileSize, at = 0
            if let record {
                guard record.offset >= 0, record.length >= ResultRecord.headerSize, record.offset + record.length <= Int64(fileSize) else {
                    throw DubfarmError(.protocolViolation, "\(fileName(path)): the result record at byte \(record.offset) (\(record.length) bytes) lies past the end of the file (\(fileSize) bytes)")
                }
                size = Int(record.length)
                at = Int(record.offset)
            }
            return try farmErrors { try SharedBuffer(reading: fd, at: at, count: size, path: path) }
        }
        let start = record == nil ? 0 : ResultRecord.headerSize
        self.start = start
        layout = try buffer.withUnsafeBytes { raw in
            try record?.check(header: raw, in: fileName(path))
            return try PacketBundleLayout(scanning: UnsafeRawBufferPointer(rebasing: raw[start...]))
        }
    }

    /// Makes `pkt` packet `i` of the bundle: a new reference to the file's buffer, pointing at
    /// the payload (the muxer may keep it queued after this object is gone).
    func load(_ i: Int, into pkt: Packet) throws {
        let s = layout.packets[i]
        try pkt.reference(buffer, offset: start + s.offset, size: s.size, pts: s.pts, dts: s.dts, duration: s.duration, isKey: s.isKey)
    }
}
