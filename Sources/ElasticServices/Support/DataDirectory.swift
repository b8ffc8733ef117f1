import Foundation

/// Data dirs: created on first use with mode 0700, and checked with errors that name the cause.
public enum DataDirectory {
    /// Creates `url` and its parents as needed and checks that this user may read and write it.
    public static func prepare(_ url: URL) throws {
        var path = ""
        for component in url.standardizedFileURL.path.split(separator: "/") {
            path += "/" + component
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
                guard isDirectory.boolValue else {
                    throw ElasticError("cannot use the data dir \(url.path): \(path) is a file, not a directory")
                }
                continue
            }
            if mkdir(path, 0o700) != 0 && errno != EEXIST {
                throw ElasticError("cannot create the data dir \(url.path): \(path): \(String(cString: strerror(errno)))")
            }
        }
        guard access(url.path, R_OK | W_OK | X_OK) == 0 else {
            throw ElasticError("the data dir \(url.path) is not readable and writable by this user: \(String(cString: strerror(errno)))")
        }
    }
}

/// An exclusive lock on a data dir, held while a controller or a worker uses it: a second
/// process on the same dir would append to the same journal or present the same node
/// certificate (a split brain). `flock` on `<dir>/lock`, which names the holder; the kernel
/// releases it when the process ends, however it ends, so a crash never leaves a stale lock.
public final class DataDirectoryLock: @unchecked Sendable {
    private let descriptor: Int32
    private let lock = NSLock()
    private var released = false

    private init(descriptor: Int32) { self.descriptor = descriptor }

    /// Takes the lock of `directory` for `holder` (`controller`, `worker w1`), or throws an
    /// error naming the process that holds it.
    public static func acquire(_ directory: URL, holder: String) throws -> DataDirectoryLock {
        let path = directory.appendingPathComponent("lock").path
        let descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw ElasticError("cannot open the data dir's lock file \(path): \(String(cString: strerror(errno)))")
        }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            let code = errno
            var buffer = [UInt8](repeating: 0, count: 256)
            let count = pread(descriptor, &buffer, buffer.count, 0)
            close(descriptor)
            guard code == EWOULDBLOCK else {
                throw ElasticError("cannot lock the data dir \(directory.path): \(String(cString: strerror(code)))")
            }
            let owner = String(decoding: buffer.prefix(max(0, count)), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            throw ElasticError("the data dir \(directory.path) is in use by another elastic process (\(owner.isEmpty ? "holder unknown" : owner)); stop it first, or give this one its own --data-dir")
        }
        let text = Array("pid \(getpid()), \(holder)\n".utf8)
        _ = ftruncate(descriptor, 0)
        _ = text.withUnsafeBytes { pwrite(descriptor, $0.baseAddress, $0.count, 0) }
        return DataDirectoryLock(descriptor: descriptor)
    }

    /// Releases the lock (also done when the process exits).
    public func release() {
        lock.withLock {
            guard !released else { return }
            released = true
            close(descriptor)
        }
    }

    deinit { release() }
}
