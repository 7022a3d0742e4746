package syscalls

//go:generate sh -c "awk -v table=amd64Names -v src=asm/unistd_64.h -f mktable.awk /usr/include/x86_64-linux-gnu/asm/unistd_64.h | gofmt > amd64names.go"
//go:generate sh -c "awk -v table=arm64Names -v src=asm-generic/unistd.h -f mktable.awk /usr/include/asm-generic/unistd.h | gofmt > arm64names.go"
