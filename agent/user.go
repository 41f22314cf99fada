package agent

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// openInRoot opens path inside root with symlinks resolved as if root were
// "/", so an image's /etc/passwd -> /host/... cannot leave the rootfs.
func openInRoot(root, path string) (*os.File, error) {
	dfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dfd)
	fd, err := unix.Openat2(dfd, strings.TrimPrefix(path, "/"), &unix.OpenHow{
		Flags: unix.O_RDONLY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), path), nil
}

// lookupColon finds the line of /etc/passwd or /etc/group whose first field is
// name (or whose third field is the numeric id) and returns its fields.
func lookupColon(root, file, key string) ([]string, error) {
	f, err := openInRoot(root, file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, 4<<20))
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) >= 3 && (fields[0] == key || fields[2] == key) {
			return fields, nil
		}
	}
	return nil, fmt.Errorf("%s has no entry %q", file, key)
}

// resolveUser turns an image config user ("uid", "uid:gid", "name",
// "name:group") into numeric ids, reading /etc/passwd and /etc/group inside
// the container's rootfs for names.
func resolveUser(root, user string) (uid, gid uint32, err error) {
	if user == "" {
		return 0, 0, nil
	}
	u, g, hasGroup := strings.Cut(user, ":")
	if n, err := strconv.ParseUint(u, 10, 32); err == nil {
		uid = uint32(n)
		// The primary group of a numeric user comes from passwd if listed.
		if fields, err := lookupColon(root, "/etc/passwd", u); err == nil && len(fields) >= 4 {
			if n, err := strconv.ParseUint(fields[3], 10, 32); err == nil {
				gid = uint32(n)
			}
		}
	} else {
		fields, err := lookupColon(root, "/etc/passwd", u)
		if err != nil || len(fields) < 4 {
			return 0, 0, fmt.Errorf("image user %q: not found in the image's /etc/passwd", user)
		}
		id, err1 := strconv.ParseUint(fields[2], 10, 32)
		pg, err2 := strconv.ParseUint(fields[3], 10, 32)
		if err1 != nil || err2 != nil {
			return 0, 0, fmt.Errorf("image user %q: bad /etc/passwd entry", user)
		}
		uid, gid = uint32(id), uint32(pg)
	}
	if hasGroup {
		if n, err := strconv.ParseUint(g, 10, 32); err == nil {
			gid = uint32(n)
		} else {
			fields, err := lookupColon(root, "/etc/group", g)
			if err != nil {
				return 0, 0, fmt.Errorf("image user %q: group %q not found in the image's /etc/group", user, g)
			}
			n, err := strconv.ParseUint(fields[2], 10, 32)
			if err != nil {
				return 0, 0, fmt.Errorf("image user %q: bad /etc/group entry", user)
			}
			gid = uint32(n)
		}
	}
	return uid, gid, nil
}
