import Foundation

#if canImport(Glibc)
import Glibc
#endif

public struct JournalError: Error, Sendable, CustomStringConvertible {
    public let description: String

    public init(_ description: String) {
        self.description = description
    }

    static func posix(_ what: String, _ path: String) -> JournalError {
        JournalError("\(what) \(path): \(String(cString: strerror(errno)))")
    }
}

/// Runs file I/O of `FileIO.swift` (which reports `DatasetError`) as journal I/O.
private func journalIO<T>(_ body: () throws(DatasetError) -> T) throws(JournalError) -> T {
    do {
        return try body()
    } catch {
        throw JournalError(error.description)
    }
}

/// An append-only log of byte records in one file, each framed and checksummed, made durable
/// (fdatasync) before `append` returns, and a snapshot file beside it that compaction replaces
/// atomically. The bytes of a record are the caller's; this type only guarantees that what it
/// hands back on `open` is exactly a prefix of what was appended (after the last snapshot).
///
/// Log file: a 16-byte header (`ELASTICJ`, version, reserved), then records of
/// `[length u32][crc32c u32][sequence u64][payload]`, little-endian, the CRC-32C over the
/// sequence and the payload. Sequences grow by one across the whole history; a snapshot says
/// the last sequence it includes, so records at or below it are skipped on replay (a crash
/// between writing a snapshot and emptying the log loses nothing and applies nothing twice).
///
/// A crash can leave a torn record at the end, and a bad disk a damaged one: `open` stops at
/// the first record that is short, fails its checksum or breaks the sequence, truncates the
/// file there and says what it dropped.
public final class RecordLog: @unchecked Sendable {
    public struct Opened: Sendable {
        /// The snapshot's bytes and the last sequence they include.
        public var snapshot: (sequence: UInt64, payload: [UInt8])?
        /// The records after the snapshot, in order.
        public var records: [[UInt8]]
        /// What was dropped from the end of the log, if anything, in words.
        public var dropped: String?
    }

    static let logMagic = Array("ELASTICJ".utf8)
    static let snapshotMagic = Array("ELASTICS".utf8)
    static let version: UInt32 = 1
    static let headerSize = 16
    static let recordHeaderSize = 16
    /// No record or snapshot is this large; a length above it is damage.
    static let maximumPayload = 1 << 30

    public let directory: String
    private var logPath: String { directory + "/journal.log" }
    private var snapshotPath: String { directory + "/journal.snapshot" }
    private let lock = NSLock()
    private var descriptor: Int32 = -1
    private var end = 0
    private var nextSequence: UInt64 = 1
    /// Bytes of records appended since the last snapshot.
    public private(set) var bytesSinceSnapshot = 0

    private init(directory: String) {
        self.directory = directory
    }

    deinit {
        if descriptor >= 0 { close(descriptor) }
    }

    /// Opens (creating if needed) the log in `directory` and reads back what it holds.
    public static func open(directory: String) throws -> (RecordLog, Opened) {
        try journalIO { () throws(DatasetError) in try makeDirectories(directory) }
        let log = RecordLog(directory: directory)
        let opened = try log.load()
        return (log, opened)
    }

    private func load() throws -> Opened {
        var opened = Opened(snapshot: nil, records: [], dropped: nil)
        if fileExists(snapshotPath) {
            opened.snapshot = try readSnapshot()
        }
        let snapshotSequence = opened.snapshot?.sequence ?? 0
        if !fileExists(logPath) {
            try writeEmptyLog()
        }
        let bytes = try readWhole(logPath)
        descriptor = Glibc.open(logPath, O_RDWR | O_CLOEXEC)
        guard descriptor >= 0 else { throw JournalError.posix("cannot open the journal", logPath) }
        guard bytes.count >= Self.headerSize, Array(bytes[0..<8]) == Self.logMagic else {
            throw JournalError("\(logPath) is not an elastic journal (bad header); move it aside to start with an empty one")
        }
        guard readU32(bytes, 8) == Self.version else {
            throw JournalError("\(logPath) is journal version \(readU32(bytes, 8)); this controller reads version \(Self.version)")
        }
        var offset = Self.headerSize
        var expected = snapshotSequence + 1
        var problem: String?
        while offset < bytes.count {
            guard bytes.count - offset >= Self.recordHeaderSize else {
                problem = "a torn record header"
                break
            }
            let length = Int(readU32(bytes, offset))
            let crc = readU32(bytes, offset + 4)
            let sequence = readU64(bytes, offset + 8)
            guard length <= Self.maximumPayload else {
                problem = "a record claiming \(length) bytes"
                break
            }
            guard bytes.count - offset - Self.recordHeaderSize >= length else {
                problem = "a torn record (\(bytes.count - offset - Self.recordHeaderSize) of its \(length) bytes)"
                break
            }
            let body = offset + 8..<offset + Self.recordHeaderSize + length
            let actual = bytes.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[body])) }
            guard actual == crc else {
                problem = "a record whose checksum does not match"
                break
            }
            if sequence <= snapshotSequence {
                // Already in the snapshot (a crash came between the snapshot and the new log).
                offset = body.upperBound
                continue
            }
            guard sequence == expected else {
                problem = "a record out of sequence (\(sequence), expected \(expected))"
                break
            }
            opened.records.append(Array(bytes[offset + Self.recordHeaderSize..<body.upperBound]))
            expected += 1
            offset = body.upperBound
        }
        if let problem {
            let dropped = bytes.count - offset
            opened.dropped = "dropped \(dropped) byte(s) at the end of \(logPath) from offset \(offset): \(problem)"
            guard ftruncate(descriptor, off_t(offset)) == 0, fsync(descriptor) == 0 else {
                throw JournalError.posix("cannot truncate the damaged end of", logPath)
            }
        }
        end = offset
        nextSequence = expected
        bytesSinceSnapshot = offset - Self.headerSize
        return opened
    }

    /// Appends the records and returns once they are on disk.
    public func append(_ payloads: [[UInt8]]) throws {
        guard !payloads.isEmpty else { return }
        try lock.withLock {
            var buffer: [UInt8] = []
            buffer.reserveCapacity(payloads.reduce(0) { $0 + $1.count + Self.recordHeaderSize })
            var sequence = nextSequence
            for payload in payloads {
                precondition(payload.count <= Self.maximumPayload, "a journal record of \(payload.count) bytes")
                var body: [UInt8] = []
                body.reserveCapacity(8 + payload.count)
                appendU64(&body, sequence)
                body.append(contentsOf: payload)
                appendU32(&buffer, UInt32(payload.count))
                appendU32(&buffer, CRC32C.checksum(body))
                buffer.append(contentsOf: body)
                sequence += 1
            }
            try writeFully(descriptor, buffer, at: end, path: logPath)
            guard fdatasync(descriptor) == 0 else { throw JournalError.posix("cannot sync", logPath) }
            end += buffer.count
            bytesSinceSnapshot += buffer.count
            nextSequence = sequence
        }
    }

    /// Replaces the snapshot with `payload` (everything appended so far) and empties the log.
    public func compact(_ payload: [UInt8]) throws {
        try lock.withLock {
            let sequence = nextSequence - 1
            var bytes = Self.snapshotMagic
            appendU32(&bytes, Self.version)
            appendU32(&bytes, 0)
            appendU64(&bytes, sequence)
            appendU32(&bytes, UInt32(payload.count))
            appendU32(&bytes, CRC32C.checksum(payload))
            bytes.append(contentsOf: payload)
            try writeAtomically(bytes, to: snapshotPath)
            // The snapshot holds everything: a fresh log replaces the old one.
            try writeEmptyLog()
            close(descriptor)
            descriptor = Glibc.open(logPath, O_RDWR | O_CLOEXEC)
            guard descriptor >= 0 else { throw JournalError.posix("cannot open the journal", logPath) }
            end = Self.headerSize
            bytesSinceSnapshot = 0
        }
    }

    private func readSnapshot() throws -> (UInt64, [UInt8]) {
        let bytes = try readWhole(snapshotPath)
        let fixed = Self.headerSize + 16
        guard bytes.count >= fixed, Array(bytes[0..<8]) == Self.snapshotMagic, readU32(bytes, 8) == Self.version else {
            throw JournalError("\(snapshotPath) is not an elastic journal snapshot of version \(Self.version)")
        }
        let sequence = readU64(bytes, 16)
        let length = Int(readU32(bytes, 24))
        let crc = readU32(bytes, 28)
        guard bytes.count == fixed + length else {
            throw JournalError("\(snapshotPath) is \(bytes.count) bytes, its header says \(fixed + length): the snapshot is damaged (snapshots are replaced atomically, so this is not a crash; restore the data dir from a backup or move the journal aside)")
        }
        let payload = Array(bytes[fixed...])
        guard CRC32C.checksum(payload) == crc else {
            throw JournalError("\(snapshotPath): the snapshot's checksum does not match: it is damaged (restore the data dir from a backup or move the journal aside)")
        }
        return (sequence, payload)
    }

    private func writeEmptyLog() throws {
        var header = Self.logMagic
        appendU32(&header, Self.version)
        appendU32(&header, 0)
        try writeAtomically(header, to: logPath)
    }

    /// Written under a temporary name, fsynced, renamed into place, the directory fsynced. Mode
    /// 0600: the journal holds the tokens' secret hashes.
    private func writeAtomically(_ bytes: [UInt8], to path: String) throws {
        try journalIO { () throws(DatasetError) in
            let writer = try AtomicFileWriter(path: path, mode: 0o600)
            try bytes.withUnsafeBytes { raw in Result { () throws(DatasetError) in try writer.write(raw) } }.get()
            try writer.commit()
            try syncDirectory(directory)
        }
    }
}

private func readWhole(_ path: String) throws -> [UInt8] {
    try journalIO { () throws(DatasetError) in
        let file = try ReadableFile(path: path) { DatasetError.io("open", $0, errno: ENOENT) }
        return try file.readBytes(count: file.length, at: 0)
    }
}

private func writeFully(_ fd: Int32, _ bytes: [UInt8], at offset: Int, path: String) throws {
    var done = 0
    while done < bytes.count {
        let count = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress! + done, $0.count - done, off_t(offset + done)) }
        if count < 0, errno == EINTR { continue }
        guard count > 0 else { throw JournalError.posix("cannot write", path) }
        done += count
    }
}

private func readU32(_ bytes: [UInt8], _ at: Int) -> UInt32 {
    (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[at + $1]) << (8 * UInt32($1)) }
}

private func readU64(_ bytes: [UInt8], _ at: Int) -> UInt64 {
    (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[at + $1]) << (8 * UInt64($1)) }
}

private func appendU32(_ bytes: inout [UInt8], _ value: UInt32) {
    for shift in stride(from: 0, to: 32, by: 8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) }
}

private func appendU64(_ bytes: inout [UInt8], _ value: UInt64) {
    for shift in stride(from: 0, to: 64, by: 8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
}
