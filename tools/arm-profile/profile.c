/* QEMU TCG plugin (plugin API version 1, QEMU >= 7.2): counts the guest instructions executed per
 * translation block start address and, at exit, writes "ADDRESS COUNT" lines (hex address, decimal
 * count) to the file named by $ARM_PROFILE_OUT (default: stderr). tools/arm-profile/arm-profile.py turns
 * them into instructions per function. Like arm-icount, exact and repeatable; count one guest thread. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
typedef struct qemu_info_t qemu_info_t;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
extern void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
extern size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
extern uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
extern void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op, void *ptr,
                                                     uint64_t imm);
extern void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

/* Open addressing on the block address; a block retranslated later adds to the same slot. */
#define SLOTS (1u << 21)
struct slot {
    uint64_t vaddr;
    uint64_t count;
};
static struct slot *slots;

static struct slot *slot_for(uint64_t vaddr) {
    uint64_t h = (vaddr * 0x9E3779B97F4A7C15ull) >> 43;
    for (uint64_t i = 0; i < SLOTS; i++) {
        struct slot *s = &slots[(h + i) & (SLOTS - 1)];
        if (s->vaddr == vaddr || s->vaddr == 0) {
            s->vaddr = vaddr;
            return s;
        }
    }
    fprintf(stderr, "arm-profile: more than %u blocks\n", SLOTS);
    abort();
}

static void trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    struct slot *s = slot_for(qemu_plugin_tb_vaddr(tb));
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &s->count, qemu_plugin_tb_n_insns(tb));
}

static void done(qemu_plugin_id_t id, void *p) {
    const char *path = getenv("ARM_PROFILE_OUT");
    FILE *out = path ? fopen(path, "w") : stderr;
    if (!out) {
        perror(path);
        return;
    }
    for (uint32_t i = 0; i < SLOTS; i++)
        if (slots[i].count) fprintf(out, "%llx %llu\n", (unsigned long long)slots[i].vaddr, (unsigned long long)slots[i].count);
    if (out != stderr) fclose(out);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
                                                               char **argv) {
    slots = calloc(SLOTS, sizeof *slots);
    if (!slots) return -1;
    qemu_plugin_register_vcpu_tb_trans_cb(id, trans);
    qemu_plugin_register_atexit_cb(id, done, NULL);
    return 0;
}
