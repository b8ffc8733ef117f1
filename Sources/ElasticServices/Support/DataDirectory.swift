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
