/* placeholder until this part is written */
typedef int retro_placeholder_kernels;
