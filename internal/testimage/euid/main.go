// Command euid prints its effective user ID, as the nonewprivs test image
// of the CRI validation suite does: installed setuid root, it tells whether
// no_new_privs stopped the escalation.
package main

import (
	"fmt"
	"os"
)

func main() { fmt.Printf("Effective uid: %d\n", os.Geteuid()) }
