/*
 * C baseline for the membacking benchmarks: the same kernel work as the
 * library's hot paths, with no library around it. Built by `deno task bench`
 * (bench/run.ts) with `cc -O2 -Wall -Wextra -o bench/.build/baseline bench/baseline.c`.
 *
 * Usage: baseline <benchmark|all> [batch] [samples]
 *
 * Each benchmark is timed in samples: one sample runs a batch of operations
 * between two clock_gettime(CLOCK_MONOTONIC) calls, and its figure is the
 * sample time / batch. After one warm-up batch, the batch (first size:
 * `batch`, default the benchmark's own) is doubled until the fastest of
 * three samples takes at least 50 us, so the clock's resolution and cost do not matter. Each
 * benchmark prints one JSON line:
 *   {"name": "...", "unit": "...", "batch": <operations per sample>,
 *    "median": <median ns per operation over the samples>, "p10": <10th percentile>,
 *    "samples": [<ns per operation of each sample>]}
 * (the same shape as bench/bench_support.ts prints for the TypeScript side).
 *
 * The syscall sequence of each operation mirrors what the TypeScript stack
 * does (checked with `strace -f`):
 *   region map   = mmap(MAP_SHARED|MAP_FIXED, backing) + KVM_SET_USER_MEMORY_REGION
 *   region unmap = KVM_SET_USER_MEMORY_REGION (size 0)
 *                  + mmap(PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED|MAP_NORESERVE)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef MFD_CLOEXEC
#define MFD_CLOEXEC 0x0001U
#endif
#ifndef MFD_ALLOW_SEALING
#define MFD_ALLOW_SEALING 0x0002U
#endif
#ifndef KVM_CAP_PRE_FAULT_MEMORY
#define KVM_CAP_PRE_FAULT_MEMORY 236
#endif
/* include/uapi/linux/kvm.h (Linux 6.11+): older installed headers lack it. */
struct pre_fault_memory {
    uint64_t gpa;
    uint64_t size;
    uint64_t flags;
    uint64_t padding[5];
};
#define PRE_FAULT_MEMORY _IOWR(KVMIO, 0xd5, struct pre_fault_memory)

#define KIB (1024ULL)
#define MIB (1024ULL * KIB)
#define GIB (1024ULL * MIB)

/* Everything a benchmark computes ends up here, so nothing is optimised away. */
static volatile uint64_t sink;

static void die(const char *what) {
    fprintf(stderr, "baseline: %s: %s\n", what, strerror(errno));
    exit(1);
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ---- shared setup -------------------------------------------------------- */

static int new_memfd(uint64_t size) {
    int fd = memfd_create("guest-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) die("memfd_create");
    if (ftruncate(fd, (off_t)size) < 0) die("ftruncate");
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) die("F_ADD_SEALS");
    return fd;
}

/* An inaccessible reservation, like VaMapper.reserve (2 MiB aligned). */
static uint8_t *reserve(uint64_t size) {
    uint64_t align = 2 * MIB;
    uint8_t *p = mmap(NULL, size + align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                      -1, 0);
    if (p == MAP_FAILED) die("mmap reserve");
    uintptr_t start = ((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1);
    if (start > (uintptr_t)p) munmap(p, start - (uintptr_t)p);
    uintptr_t end = start + size, mend = (uintptr_t)p + size + align;
    if (mend > end) munmap((void *)end, mend - end);
    return (uint8_t *)start;
}

static void map_shared(uint8_t *host, uint64_t len, int fd, uint64_t off, int writable) {
    int prot = writable ? PROT_READ | PROT_WRITE : PROT_READ;
    if (mmap(host, len, prot, MAP_SHARED | MAP_FIXED, fd, (off_t)off) == MAP_FAILED) die("mmap");
}

static void map_none(uint8_t *host, uint64_t len) {
    if (mmap(host, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1,
             0) == MAP_FAILED)
        die("mmap PROT_NONE");
}

struct kvm {
    int sys, vm, vcpu;
};

static struct kvm kvm_open(void) {
    struct kvm k = {-1, -1, -1};
    k.sys = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (k.sys < 0) die("open /dev/kvm");
    k.vm = ioctl(k.sys, KVM_CREATE_VM, 0);
    if (k.vm < 0) die("KVM_CREATE_VM");
    return k;
}

static void kvm_close(struct kvm *k) {
    if (k->vcpu >= 0) close(k->vcpu);
    close(k->vm);
    close(k->sys);
}

static void set_slot(int vm, uint32_t slot, uint32_t flags, uint64_t gpa, uint64_t size,
                     void *host) {
    struct kvm_userspace_memory_region r = {
        .slot = slot,
        .flags = flags,
        .guest_phys_addr = gpa,
        .memory_size = size,
        .userspace_addr = (uint64_t)(uintptr_t)host,
    };
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r) < 0) die("KVM_SET_USER_MEMORY_REGION");
}

/* ---- benchmarks ---------------------------------------------------------- */

typedef void (*op_fn)(void *state);

struct bench {
    const char *name;
    const char *unit; /* what one operation is */
    uint64_t batch;   /* first batch size tried (doubled until a sample takes 25 us) */
    int samples;
    void *(*setup)(void);
    op_fn op;
    void (*teardown)(void *state);
    uint64_t param; /* read by setup through bench_param (a region count) */
};

/* The running benchmark's `param`, for its setup. */
static uint64_t bench_param;

/* 1. Slot map: one region of 2 MiB mapped and unmapped (VA + memory slot). */
struct slot_state {
    struct kvm kvm;
    int fd;
    uint8_t *base;
};
#define SLOT_GPA (16 * MIB)
#define SLOT_LEN (2 * MIB)

static void *slot_setup(void) {
    struct slot_state *s = calloc(1, sizeof *s);
    s->kvm = kvm_open();
    s->fd = new_memfd(SLOT_LEN);
    s->base = reserve(64 * MIB);
    return s;
}

static void slot_op(void *p) {
    struct slot_state *s = p;
    uint8_t *host = s->base + SLOT_GPA;
    map_shared(host, SLOT_LEN, s->fd, 0, 1);
    set_slot(s->kvm.vm, 0, 0, SLOT_GPA, SLOT_LEN, host);
    set_slot(s->kvm.vm, 0, 0, SLOT_GPA, 0, 0);
    map_none(host, SLOT_LEN);
}

static void slot_teardown(void *p) {
    struct slot_state *s = p;
    kvm_close(&s->kvm);
    munmap(s->base, 64 * MIB);
    close(s->fd);
    free(s);
}

/*
 * 2. PAM flip: x86 legacy RAM (16 MiB guest, low 1 MiB split in 16 regions,
 * one memory slot each); one operation = the 14 regions between 0xa0000 and
 * 0x100000 RW -> RO, then all of them RO -> RW. Each change deletes the slot,
 * unmaps the VA, maps it again with the new protection and creates the slot.
 */
#define PAM_RAM (16 * MIB)
static const uint64_t pam_bounds[17] = {
    0x0,     0xa0000, 0xc0000, 0xc4000, 0xc8000, 0xcc000,  0xd0000, 0xd4000, 0xd8000,
    0xdc000, 0xe0000, 0xe4000, 0xe8000, 0xec000, 0xf0000, 0x100000, PAM_RAM,
};

struct pam_state {
    struct kvm kvm;
    int fd;
    uint8_t *base;
};

static void *pam_setup(void) {
    struct pam_state *s = calloc(1, sizeof *s);
    s->kvm = kvm_open();
    s->fd = new_memfd(PAM_RAM);
    s->base = reserve(PAM_RAM);
    for (int i = 0; i < 16; i++) {
        uint64_t gpa = pam_bounds[i], len = pam_bounds[i + 1] - gpa;
        map_shared(s->base + gpa, len, s->fd, gpa, 1);
        set_slot(s->kvm.vm, (uint32_t)i, 0, gpa, len, s->base + gpa);
    }
    return s;
}

static void pam_set(struct pam_state *s, int writable) {
    for (int i = 1; i <= 14; i++) {
        uint64_t gpa = pam_bounds[i], len = pam_bounds[i + 1] - gpa;
        uint8_t *host = s->base + gpa;
        set_slot(s->kvm.vm, (uint32_t)i, 0, gpa, 0, 0);
        map_none(host, len);
        map_shared(host, len, s->fd, gpa, writable);
        set_slot(s->kvm.vm, (uint32_t)i, writable ? 0 : KVM_MEM_READONLY, gpa, len, host);
    }
}

static void pam_op(void *p) {
    pam_set(p, 0);
    pam_set(p, 1);
}

/*
 * 2b. PAM flip, slot ioctls only: the same 14 slots deleted and created again
 * RW -> RO -> RW (28 delete+create pairs), with no host mapping change, as
 * QEMU does on a PAM change (host RAM stays mapped).
 */
static void pam_set_ioctl(struct pam_state *s, int writable) {
    for (int i = 1; i <= 14; i++) {
        uint64_t gpa = pam_bounds[i], len = pam_bounds[i + 1] - gpa;
        set_slot(s->kvm.vm, (uint32_t)i, 0, gpa, 0, 0);
        set_slot(s->kvm.vm, (uint32_t)i, writable ? 0 : KVM_MEM_READONLY, gpa, len,
                 s->base + gpa);
    }
}

static void pam_ioctl_op(void *p) {
    pam_set_ioctl(p, 0);
    pam_set_ioctl(p, 1);
}

static void pam_teardown(void *p) {
    struct pam_state *s = p;
    kvm_close(&s->kvm);
    munmap(s->base, PAM_RAM);
    close(s->fd);
    free(s);
}

/*
 * SeaBIOS POST PAM sequence: a 128 MiB x86 legacy guest (16 RAM slots, one
 * per legacy piece, the rest of RAM one slot) with a 128 KiB BIOS image
 * mapped read-only below 4 GiB and, under the PAM pieces 0xe0000-0x100000,
 * its low alias (one slot per piece while the RAM above it is unmapped).
 * One operation replays what bench/seabios_pam_bench.ts does: a host bridge
 * reset (all 13 PAM registers 0) and the four config writes SeaBIOS 1.16.2
 * makes during POST (bench/seabios_pam_sequence.ts), decoded as the
 * library's I440fxPam does (mode 10 shown unmapped), each piece whose
 * visibility changes costing the syscalls the library makes (strace -f):
 *   leaving a visible or ROM-backed state: slot delete + mmap(PROT_NONE)
 *   entering RAM: mmap(MAP_SHARED, guest RAM) + slot create
 *   entering "unmapped" over the ROM: mmap(MAP_SHARED, ROM, PROT_READ) + slot create
 */
#define SB_RAM (128 * MIB)
#define SB_ROM (128 * KIB)
#define SB_FOUR_GIB (4 * GIB)
enum { SB_UNMAPPED = 0, SB_RO = 1, SB_RW = 2 };
static const uint32_t sb_writes[4][3] = {
    {0x58, 4, 0x33333000}, {0x5c, 4, 0x33333333}, {0x58, 4, 0x11111000}, {0x5c, 4, 0x31111111},
};

struct sb_state {
    struct kvm kvm;
    int ram, rom;
    uint8_t *base;
    uint8_t regs[7];   /* PAM0-PAM6 (0x59-0x5f) */
    int visibility[13];
};

/* Piece i: 0-11 are 0xc0000 + 16 KiB * i, 12 is 0xf0000-0x100000. */
static uint64_t sb_gpa(int i) { return i < 12 ? 0xc0000 + 0x4000ULL * (uint64_t)i : 0xf0000; }
static uint64_t sb_len(int i) { return i < 12 ? 0x4000 : 0x10000; }
static int sb_rom_under(int i) { return sb_gpa(i) >= 0xe0000; }
static int sb_mode(const struct sb_state *s, int i) {
    if (i == 12) return (s->regs[0] >> 4) & 3;
    return (s->regs[1 + i / 2] >> (i % 2 ? 4 : 0)) & 3;
}
static int sb_visibility_of(int mode) {
    return mode == 3 ? SB_RW : mode == 1 ? SB_RO : SB_UNMAPPED;
}

static void sb_set(struct sb_state *s, int i, int to) {
    int from = s->visibility[i];
    if (from == to) return;
    uint64_t gpa = sb_gpa(i), len = sb_len(i);
    uint8_t *host = s->base + gpa;
    uint32_t slot = 2 + (uint32_t)i;
    if (from != SB_UNMAPPED || sb_rom_under(i)) {
        /* The library deletes a slot with its own record, size 0 (flags kept). */
        set_slot(s->kvm.vm, slot, from == SB_RW ? 0 : KVM_MEM_READONLY, gpa, 0, 0);
        map_none(host, len);
    }
    if (to != SB_UNMAPPED) {
        map_shared(host, len, s->ram, gpa, to == SB_RW);
        set_slot(s->kvm.vm, slot, to == SB_RW ? 0 : KVM_MEM_READONLY, gpa, len, host);
    } else if (sb_rom_under(i)) {
        map_shared(host, len, s->rom, SB_ROM - (0x100000 - gpa), 0);
        set_slot(s->kvm.vm, slot, KVM_MEM_READONLY, gpa, len, host);
    }
    s->visibility[i] = to;
}

static void sb_apply(struct sb_state *s) {
    for (int i = 0; i < 13; i++) sb_set(s, i, sb_visibility_of(sb_mode(s, i)));
}

static void sb_write(struct sb_state *s, uint32_t offset, uint32_t width, uint32_t value) {
    for (uint32_t b = 0; b < width; b++) {
        uint32_t at = offset + b;
        if (at >= 0x59 && at <= 0x5f) s->regs[at - 0x59] = (uint8_t)(value >> (8 * b));
    }
    sb_apply(s);
}

static void sb_op(void *p) {
    struct sb_state *s = p;
    memset(s->regs, 0, sizeof s->regs); /* host bridge reset */
    sb_apply(s);
    for (int w = 0; w < 4; w++) sb_write(s, sb_writes[w][0], sb_writes[w][1], sb_writes[w][2]);
}

static void *sb_setup(void) {
    struct sb_state *s = calloc(1, sizeof *s);
    s->kvm = kvm_open();
    s->ram = new_memfd(SB_RAM);
    s->rom = new_memfd(SB_ROM);
    s->base = reserve(SB_FOUR_GIB);
    /* RAM: 0-0xa0000 (slot 0), the VGA window (slot 1), the 13 PAM pieces (slots 2-14), above 1 MiB (slot 15). */
    map_shared(s->base, 0xc0000, s->ram, 0, 1);
    set_slot(s->kvm.vm, 0, 0, 0, 0xa0000, s->base);
    set_slot(s->kvm.vm, 1, 0, 0xa0000, 0x20000, s->base + 0xa0000);
    for (int i = 0; i < 13; i++) {
        map_shared(s->base + sb_gpa(i), sb_len(i), s->ram, sb_gpa(i), 1);
        set_slot(s->kvm.vm, 2 + (uint32_t)i, 0, sb_gpa(i), sb_len(i), s->base + sb_gpa(i));
        s->visibility[i] = SB_RW;
    }
    map_shared(s->base + 0x100000, SB_RAM - 0x100000, s->ram, 0x100000, 1);
    set_slot(s->kvm.vm, 15, 0, 0x100000, SB_RAM - 0x100000, s->base + 0x100000);
    map_shared(s->base + SB_FOUR_GIB - SB_ROM, SB_ROM, s->rom, 0, 0);
    set_slot(s->kvm.vm, 16, KVM_MEM_READONLY, SB_FOUR_GIB - SB_ROM, SB_ROM,
             s->base + SB_FOUR_GIB - SB_ROM);
    sb_op(s); /* power-on to the lock state, where each operation starts */
    return s;
}

static void sb_teardown(void *p) {
    struct sb_state *s = p;
    kvm_close(&s->kvm);
    munmap(s->base, SB_FOUR_GIB);
    close(s->ram);
    close(s->rom);
    free(s);
}

/* 3. Guest memory access on a memfd MAP_SHARED mapping, as GuestMemory does. */
#define MEM_SIZE (64 * MIB)
#define MEM_GPA (2 * MIB)

struct mem_state {
    int fd;
    uint8_t *map;
    uint8_t *buf;
    size_t len; /* copy size, read at run time so memcpy is a real call */
};

static void *mem_setup_len(size_t len) {
    struct mem_state *s = calloc(1, sizeof *s);
    s->fd = new_memfd(MEM_SIZE);
    s->map = reserve(MEM_SIZE);
    map_shared(s->map, MEM_SIZE, s->fd, 0, 1);
    memset(s->map, 0x5a, MEM_SIZE);
    s->buf = aligned_alloc(4096, 1 * MIB);
    memset(s->buf, 0xa5, 1 * MIB);
    s->len = len;
    return s;
}

static void *mem_setup_8(void) { return mem_setup_len(8); }
static void *mem_setup_4k(void) { return mem_setup_len(4 * KIB); }
static void *mem_setup_1m(void) { return mem_setup_len(1 * MIB); }

static void read8_op(void *p) {
    struct mem_state *s = p;
    sink += *(volatile uint64_t *)(s->map + MEM_GPA);
}

static void copy_out_op(void *p) {
    struct mem_state *s = p;
    memcpy(s->buf, s->map + MEM_GPA, s->len);
    __asm__ volatile("" : : "r"(s->buf) : "memory");
    sink += s->buf[s->len - 1];
}

static void copy_in_op(void *p) {
    struct mem_state *s = p;
    memcpy(s->map + MEM_GPA, s->buf, s->len);
    __asm__ volatile("" : : "r"(s->map) : "memory");
}

static void mem_teardown(void *p) {
    struct mem_state *s = p;
    munmap(s->map, MEM_SIZE);
    close(s->fd);
    free(s->buf);
    free(s);
}

/*
 * 4. Prefetch of 1 GiB of RAM. `prefetch_*`: mmap + MADV_POPULATE_WRITE
 * (+ munmap, close), the floor for making 1 GiB resident. `prefetch_*_kvm`:
 * the library's full sequence (memfd or private RAM in a reservation, one
 * memory slot, KVM_PRE_FAULT_MEMORY through vCPU 0, slot delete, release);
 * the VM and vCPU are made once, outside the timing.
 */
#define PREFETCH_SIZE (1 * GIB)

static void prefetch_shared_op(void *p) {
    (void)p;
    int fd = new_memfd(PREFETCH_SIZE);
    uint8_t *m = mmap(NULL, PREFETCH_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) die("mmap");
    if (madvise(m, PREFETCH_SIZE, MADV_POPULATE_WRITE) < 0) die("MADV_POPULATE_WRITE");
    sink += m[PREFETCH_SIZE - 1];
    munmap(m, PREFETCH_SIZE);
    close(fd);
}

static void prefetch_private_op(void *p) {
    (void)p;
    uint8_t *m = mmap(NULL, PREFETCH_SIZE, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) die("mmap");
    if (madvise(m, PREFETCH_SIZE, MADV_POPULATE_WRITE) < 0) die("MADV_POPULATE_WRITE");
    sink += m[PREFETCH_SIZE - 1];
    munmap(m, PREFETCH_SIZE);
}

static void *prefetch_kvm_setup(void) {
    struct kvm *k = calloc(1, sizeof *k);
    *k = kvm_open();
    k->vcpu = ioctl(k->vm, KVM_CREATE_VCPU, 0);
    if (k->vcpu < 0) die("KVM_CREATE_VCPU");
    return k;
}

static void prefault(struct kvm *k, uint8_t *host) {
    if (ioctl(k->vm, KVM_CHECK_EXTENSION, KVM_CAP_PRE_FAULT_MEMORY) > 0) {
        struct pre_fault_memory r = {.gpa = 0, .size = PREFETCH_SIZE};
        while (r.size > 0) {
            if (ioctl(k->vcpu, PRE_FAULT_MEMORY, &r) < 0 && errno != EINTR && errno != EAGAIN)
                die("KVM_PRE_FAULT_MEMORY");
        }
    } else if (madvise(host, PREFETCH_SIZE, MADV_POPULATE_WRITE) < 0) {
        die("MADV_POPULATE_WRITE");
    }
}

static void prefetch_kvm_op(struct kvm *k, int shared) {
    int fd = shared ? new_memfd(PREFETCH_SIZE) : -1;
    uint8_t *base = reserve(PREFETCH_SIZE);
    if (shared) {
        map_shared(base, PREFETCH_SIZE, fd, 0, 1);
    } else if (mmap(base, PREFETCH_SIZE, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1,
                    0) == MAP_FAILED) {
        die("mmap private");
    }
    set_slot(k->vm, 0, 0, 0, PREFETCH_SIZE, base);
    prefault(k, base);
    sink += base[PREFETCH_SIZE - 1];
    set_slot(k->vm, 0, 0, 0, 0, 0);
    if (shared) map_none(base, PREFETCH_SIZE); /* VaMapper.unmap: shared RAM back to PROT_NONE */
    munmap(base, PREFETCH_SIZE);
    if (shared) close(fd);
}

static void prefetch_shared_kvm_op(void *p) { prefetch_kvm_op(p, 1); }
static void prefetch_private_kvm_op(void *p) { prefetch_kvm_op(p, 0); }

static void prefetch_kvm_teardown(void *p) {
    kvm_close(p);
    free(p);
}

/*
 * 6. KVM slots at scale: 1 MiB of RAM in slot 0 and N one-page device
 * regions right above it (region i at 1 MiB + i pages, page i of a memfd,
 * slot i + 1; read-only when i is even, so no two neighbours could share a
 * slot or a VMA), like bench/kvm_scaling_bench.ts. `kvm_scale_N`: one
 * operation unmaps and maps again the lowest region (slot delete + PROT_NONE
 * mmap, then mmap + slot create) with all N slots present.
 */
#define SCALE_RAM (1 * MIB)
#define PAGE (4 * KIB)

struct scale_state {
    struct kvm kvm;
    int ram_fd, dev_fd;
    uint64_t count;
    uint64_t size;
    uint8_t *base;
};

static uint8_t *scale_host(struct scale_state *s, uint64_t i) { return s->base + SCALE_RAM + i * PAGE; }

static void scale_map_region(struct scale_state *s, uint64_t i) {
    map_shared(scale_host(s, i), PAGE, s->dev_fd, i * PAGE, (int)(i & 1));
}

static void scale_create_slot(struct scale_state *s, uint64_t i) {
    set_slot(s->kvm.vm, (uint32_t)(i + 1), (i & 1) ? 0 : KVM_MEM_READONLY, SCALE_RAM + i * PAGE,
             PAGE, scale_host(s, i));
}

static void scale_delete_slot(struct scale_state *s, uint64_t i) {
    set_slot(s->kvm.vm, (uint32_t)(i + 1), 0, SCALE_RAM + i * PAGE, 0, 0);
}

static struct scale_state *scale_new(uint64_t count) {
    struct scale_state *s = calloc(1, sizeof *s);
    s->kvm = kvm_open();
    s->count = count;
    s->size = SCALE_RAM + count * PAGE;
    s->ram_fd = new_memfd(SCALE_RAM);
    s->dev_fd = new_memfd(count * PAGE);
    s->base = reserve(s->size);
    map_shared(s->base, SCALE_RAM, s->ram_fd, 0, 1);
    for (uint64_t i = 0; i < count; i++) scale_map_region(s, i);
    return s;
}

static void scale_create_all(struct scale_state *s) {
    set_slot(s->kvm.vm, 0, 0, 0, SCALE_RAM, s->base);
    for (uint64_t i = 0; i < s->count; i++) scale_create_slot(s, i);
}

static void scale_delete_all(struct scale_state *s) {
    set_slot(s->kvm.vm, 0, 0, 0, 0, 0);
    for (uint64_t i = 0; i < s->count; i++) scale_delete_slot(s, i);
}

/* Whether KVM has slots for `count` regions and the RAM; else prints a "skipped" line. */
static int scale_fits(const char *name, uint64_t count) {
    struct kvm k = kvm_open();
    int max = ioctl(k.vm, KVM_CHECK_EXTENSION, KVM_CAP_NR_MEMSLOTS);
    kvm_close(&k);
    if (max > 0 && (uint64_t)max >= count + 1) return 1;
    printf("{\"name\":\"%s\",\"skipped\":\"KVM has %d memory slots here\"}\n", name, max);
    fflush(stdout);
    return 0;
}

static void *scale_setup(void) {
    struct scale_state *s = scale_new(bench_param);
    scale_create_all(s);
    return s;
}

static void scale_op(void *p) {
    struct scale_state *s = p;
    scale_delete_slot(s, 0);
    map_none(scale_host(s, 0), PAGE);
    scale_map_region(s, 0);
    scale_create_slot(s, 0);
}

static void scale_teardown(void *p) {
    struct scale_state *s = p;
    kvm_close(&s->kvm);
    munmap(s->base, s->size);
    close(s->ram_fd);
    close(s->dev_fd);
    free(s);
}

/*
 * 5. Dirty logging and snapshots of 1 GiB (bench/snapshot_bench.ts).
 * `dirty_log_read_1g`: KVM_GET_DIRTY_LOG of a 1 GiB slot made with
 * KVM_MEM_LOG_DIRTY_PAGES (manual protect enabled) and a scan of the bitmap
 * (KVM_CLEAR_DIRTY_LOG for what it finds). `restore_dirty_1000`: memcpy of
 * 1,000 pages, `(i * 104729 + 7) mod 2^18` sorted, from a mapped snapshot
 * into mapped RAM. `snapshot_1g`: a new memfd, copy_file_range of 1 GiB,
 * seals, close.
 */
#define SNAP_SIZE (1 * GIB)
#define SNAP_PAGES (SNAP_SIZE / (4 * KIB))
#define SNAP_DIRTY 1000
#ifndef KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2
#define KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 168
#endif

struct snap_state {
    struct kvm kvm;
    int ram_fd, snap_fd;
    uint8_t *ram, *snap;
    uint64_t *bitmap;
    uint64_t pages[SNAP_DIRTY];
};

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void copy_all(int from, int to, uint64_t len) {
    loff_t in = 0, out = 0;
    while (len > 0) {
        ssize_t n = copy_file_range(from, &in, to, &out, len, 0);
        if (n <= 0) die("copy_file_range");
        len -= (uint64_t)n;
    }
}

static void *snap_setup(void) {
    struct snap_state *s = calloc(1, sizeof *s);
    s->kvm.sys = s->kvm.vm = s->kvm.vcpu = -1;
    s->ram_fd = new_memfd(SNAP_SIZE);
    s->ram = mmap(NULL, SNAP_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, s->ram_fd, 0);
    if (s->ram == MAP_FAILED) die("mmap ram");
    memset(s->ram, 0x5a, SNAP_SIZE);
    s->snap_fd = new_memfd(SNAP_SIZE);
    copy_all(s->ram_fd, s->snap_fd, SNAP_SIZE);
    s->snap = mmap(NULL, SNAP_SIZE, PROT_READ, MAP_SHARED, s->snap_fd, 0);
    if (s->snap == MAP_FAILED) die("mmap snapshot");
    for (uint64_t i = 0; i < SNAP_DIRTY; i++) s->pages[i] = (i * 104729 + 7) % SNAP_PAGES;
    qsort(s->pages, SNAP_DIRTY, sizeof s->pages[0], cmp_u64);
    s->bitmap = calloc(SNAP_PAGES / 64, sizeof(uint64_t));
    return s;
}

static void *snap_kvm_setup(void) {
    struct snap_state *s = snap_setup();
    s->kvm = kvm_open();
    struct kvm_enable_cap cap = {.cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, .args = {1}};
    if (ioctl(s->kvm.vm, KVM_ENABLE_CAP, &cap) < 0) die("KVM_ENABLE_CAP");
    set_slot(s->kvm.vm, 0, KVM_MEM_LOG_DIRTY_PAGES, 0, SNAP_SIZE, s->ram);
    return s;
}

static void dirty_log_read_op(void *p) {
    struct snap_state *s = p;
    struct kvm_dirty_log log = {.slot = 0, .dirty_bitmap = s->bitmap};
    if (ioctl(s->kvm.vm, KVM_GET_DIRTY_LOG, &log) < 0) die("KVM_GET_DIRTY_LOG");
    uint64_t any = 0;
    for (uint64_t i = 0; i < SNAP_PAGES / 64; i++) any |= s->bitmap[i];
    if (any) {
        struct kvm_clear_dirty_log clear = {
            .slot = 0, .num_pages = SNAP_PAGES, .first_page = 0, .dirty_bitmap = s->bitmap};
        if (ioctl(s->kvm.vm, KVM_CLEAR_DIRTY_LOG, &clear) < 0) die("KVM_CLEAR_DIRTY_LOG");
    }
    sink += any;
}

static void restore_dirty_op(void *p) {
    struct snap_state *s = p;
    for (int i = 0; i < SNAP_DIRTY; i++) {
        uint64_t off = s->pages[i] * 4 * KIB;
        memcpy(s->ram + off, s->snap + off, 4 * KIB);
    }
    __asm__ volatile("" : : "r"(s->ram) : "memory");
}

static void snapshot_op(void *p) {
    struct snap_state *s = p;
    int fd = memfd_create("guest-ram-snapshot", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) die("memfd_create");
    if (ftruncate(fd, (off_t)SNAP_SIZE) < 0) die("ftruncate");
    copy_all(s->ram_fd, fd, SNAP_SIZE);
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0)
        die("F_ADD_SEALS");
    close(fd);
}

static void snap_teardown(void *p) {
    struct snap_state *s = p;
    if (s->kvm.vm >= 0) {
        set_slot(s->kvm.vm, 0, 0, 0, 0, s->ram);
        kvm_close(&s->kvm);
    }
    munmap(s->snap, SNAP_SIZE);
    munmap(s->ram, SNAP_SIZE);
    close(s->snap_fd);
    close(s->ram_fd);
    free(s->bitmap);
    free(s);
}

static void *no_setup(void) { return NULL; }
static void no_teardown(void *p) { (void)p; }

static const struct bench benches[] = {
    {"slot_map", "map+unmap cycle", 1, 300, slot_setup, slot_op, slot_teardown, 0},
    {"pam_flip", "14 regions RW->RO->RW", 1, 40, pam_setup, pam_op, pam_teardown, 0},
    {"seabios_pam", "SeaBIOS POST PAM sequence", 1, 30, sb_setup, sb_op, sb_teardown, 0},
    {"pam_flip_ioctl", "14 slots RW->RO->RW", 1, 40, pam_setup, pam_ioctl_op, pam_teardown, 0},
    {"read8", "8-byte read", 1024, 300, mem_setup_8, read8_op, mem_teardown, 0},
    {"copy_in_4k", "4 KiB copy", 16, 300, mem_setup_4k, copy_in_op, mem_teardown, 0},
    {"copy_out_4k", "4 KiB copy", 16, 300, mem_setup_4k, copy_out_op, mem_teardown, 0},
    {"copy_in_1m", "1 MiB copy", 1, 300, mem_setup_1m, copy_in_op, mem_teardown, 0},
    {"copy_out_1m", "1 MiB copy", 1, 300, mem_setup_1m, copy_out_op, mem_teardown, 0},
    {"kvm_scale_10", "unmap+map, 10 slots", 1, 200, scale_setup, scale_op, scale_teardown, 10},
    {"kvm_scale_1000", "unmap+map, 1000 slots", 1, 200, scale_setup, scale_op, scale_teardown,
     1000},
    {"kvm_scale_10000", "unmap+map, 10000 slots", 1, 200, scale_setup, scale_op, scale_teardown,
     10000},
    {"kvm_scale_30000", "unmap+map, 30000 slots", 1, 200, scale_setup, scale_op, scale_teardown,
     30000},
    {"prefetch_shared", "1 GiB", 1, 3, no_setup, prefetch_shared_op, no_teardown, 0},
    {"prefetch_private", "1 GiB", 1, 3, no_setup, prefetch_private_op, no_teardown, 0},
    {"prefetch_shared_kvm", "1 GiB", 1, 3, prefetch_kvm_setup, prefetch_shared_kvm_op,
     prefetch_kvm_teardown, 0},
    {"prefetch_private_kvm", "1 GiB", 1, 3, prefetch_kvm_setup, prefetch_private_kvm_op,
     prefetch_kvm_teardown, 0},
    {"dirty_log_read_1g", "1 GiB slot", 1, 100, snap_kvm_setup, dirty_log_read_op, snap_teardown, 0},
    {"restore_dirty_1000", "1,000 pages", 1, 30, snap_setup, restore_dirty_op, snap_teardown, 0},
    {"snapshot_1g", "1 GiB", 1, 3, snap_setup, snapshot_op, snap_teardown, 0},
};
#define NBENCH (sizeof benches / sizeof benches[0])

/* Linear interpolation between the closest ranks of sorted values. */
static double quantile(const double *sorted, int n, double q) {
    double pos = q * (double)(n - 1);
    int lo = (int)pos;
    if (lo >= n - 1) return sorted[n - 1];
    return sorted[lo] + (pos - (double)lo) * (sorted[lo + 1] - sorted[lo]);
}

static void print_result(const char *name, const char *unit, uint64_t batch, const double *per_op,
                         int samples) {
    double *sorted = calloc((size_t)samples, sizeof *sorted);
    memcpy(sorted, per_op, (size_t)samples * sizeof *sorted);
    qsort(sorted, (size_t)samples, sizeof *sorted, cmp_double);
    printf("{\"name\":\"%s\",\"unit\":\"%s\",\"batch\":%llu,\"median\":%.4f,\"p10\":%.4f,"
           "\"samples\":[",
           name, unit, (unsigned long long)batch, quantile(sorted, samples, 0.5),
           quantile(sorted, samples, 0.1));
    for (int j = 0; j < samples; j++) printf("%s%.4f", j ? "," : "", per_op[j]);
    printf("]}\n");
    fflush(stdout);
    free(sorted);
}

/* Wall time of `batch` operations, in ns. */
static double time_batch(const struct bench *b, void *state, uint64_t batch) {
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < batch; i++) b->op(state);
    return (double)(now_ns() - t0);
}

#define MIN_SAMPLE_NS 50000.0

static void run(const struct bench *b, uint64_t batch, int samples) {
    if (b->setup == scale_setup && !scale_fits(b->name, b->param)) return;
    bench_param = b->param;
    void *state = b->setup();
    double *per_op = calloc((size_t)samples, sizeof *per_op);
    /* One warm-up batch, then calibration (skipped for slow operations). */
    double t = time_batch(b, state, batch);
    if (t < 10e6) {
        /* The fastest of three tries, so that one slow first try does not decide. */
        for (;;) {
            double fastest = time_batch(b, state, batch);
            for (int k = 0; k < 2; k++) {
                double u = time_batch(b, state, batch);
                if (u < fastest) fastest = u;
            }
            if (fastest >= MIN_SAMPLE_NS || batch >= (1ULL << 30)) break;
            batch *= 2;
        }
    }
    for (int j = 0; j < samples; j++) per_op[j] = time_batch(b, state, batch) / (double)batch;
    b->teardown(state);
    print_result(b->name, b->unit, batch, per_op, samples);
    free(per_op);
}

/*
 * 7. `kvm_attach_detach_N`: the N-region guest of `kvm_scale_N` (its host
 * mappings made once); each sample times creating all N + 1 slots
 * (`kvm_attach_N`, what attaching a partition does) and then deleting them
 * all in slot order (`kvm_detach_N`). One operation is the whole set.
 */
static void run_attach_detach(uint64_t count, int samples) {
    char name[64];
    snprintf(name, sizeof name, "kvm_attach_%llu", (unsigned long long)count);
    if (!scale_fits(name, count)) return;
    struct scale_state *s = scale_new(count);
    double *attach = calloc((size_t)samples, sizeof *attach);
    double *detach = calloc((size_t)samples, sizeof *detach);
    scale_create_all(s); /* warm-up */
    scale_delete_all(s);
    for (int j = 0; j < samples; j++) {
        uint64_t t0 = now_ns();
        scale_create_all(s);
        uint64_t t1 = now_ns();
        scale_delete_all(s);
        attach[j] = (double)(t1 - t0);
        detach[j] = (double)(now_ns() - t1);
    }
    print_result(name, "create all slots", 1, attach, samples);
    snprintf(name, sizeof name, "kvm_detach_%llu", (unsigned long long)count);
    print_result(name, "delete all slots", 1, detach, samples);
    scale_teardown(s);
    free(attach);
    free(detach);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr,
                "usage: %s <benchmark|all> [batch] [samples]\nbenchmarks: kvm_attach_detach_N",
                argv[0]);
        for (size_t i = 0; i < NBENCH; i++) fprintf(stderr, " %s", benches[i].name);
        fprintf(stderr, "\n");
        return 2;
    }
    if (strncmp(argv[1], "kvm_attach_detach_", 18) == 0) {
        uint64_t count = strtoull(argv[1] + 18, NULL, 10);
        int samples = argc > 3 ? atoi(argv[3]) : 5;
        if (count < 1 || samples < 1) {
            fprintf(stderr, "baseline: region count and samples must be positive\n");
            return 2;
        }
        run_attach_detach(count, samples);
        return 0;
    }
    int all = strcmp(argv[1], "all") == 0, found = 0;
    for (size_t i = 0; i < NBENCH; i++) {
        if (!all && strcmp(argv[1], benches[i].name) != 0) continue;
        found = 1;
        uint64_t batch = argc > 2 ? strtoull(argv[2], NULL, 10) : benches[i].batch;
        int samples = argc > 3 ? atoi(argv[3]) : benches[i].samples;
        if (batch < 1 || samples < 1) {
            fprintf(stderr, "baseline: batch and samples must be positive\n");
            return 2;
        }
        run(&benches[i], batch, samples);
    }
    if (!found) {
        fprintf(stderr, "baseline: unknown benchmark %s\n", argv[1]);
        return 2;
    }
    return 0;
}
