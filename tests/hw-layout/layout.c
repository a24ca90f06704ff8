/*
 * Prints the sizes, field offsets, ioctl numbers and constants of <sound/asound.h> that
 * src/hw.rs re-declares, one "key value" pair a line. Compiled and run by the
 * `hw::tests::layout_matches_kernel_header` unit test, which compares every line with the
 * Rust side.
 */
#define SNDRV_LITTLE_ENDIAN 1
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/ioctl.h>
#include <sound/asound.h>

#define SIZE(t) printf("sizeof.%s %lld\n", #t, (long long)sizeof(struct t))
#define OFF(t, f) printf("offsetof.%s.%s %lld\n", #t, #f, (long long)offsetof(struct t, f))
#define VAL(x) printf("%s %lld\n", #x, (long long)(x))

static unsigned int interval_flag_word(int which)
{
	struct snd_interval i;
	unsigned int w;

	memset(&i, 0, sizeof(i));
	switch (which) {
	case 0: i.openmin = 1; break;
	case 1: i.openmax = 1; break;
	case 2: i.integer = 1; break;
	default: i.empty = 1; break;
	}
	memcpy(&w, (const char *)&i + 2 * sizeof(unsigned int), sizeof(w));
	return w;
}

int main(void)
{
	SIZE(snd_interval);
	SIZE(snd_mask);
	SIZE(snd_pcm_hw_params);
	OFF(snd_pcm_hw_params, masks);
	OFF(snd_pcm_hw_params, mres);
	OFF(snd_pcm_hw_params, intervals);
	OFF(snd_pcm_hw_params, ires);
	OFF(snd_pcm_hw_params, rmask);
	OFF(snd_pcm_hw_params, cmask);
	OFF(snd_pcm_hw_params, info);
	OFF(snd_pcm_hw_params, msbits);
	OFF(snd_pcm_hw_params, rate_num);
	OFF(snd_pcm_hw_params, rate_den);
	OFF(snd_pcm_hw_params, fifo_size);
	OFF(snd_pcm_hw_params, reserved);

	SIZE(snd_pcm_sw_params);
	OFF(snd_pcm_sw_params, tstamp_mode);
	OFF(snd_pcm_sw_params, period_step);
	OFF(snd_pcm_sw_params, sleep_min);
	OFF(snd_pcm_sw_params, avail_min);
	OFF(snd_pcm_sw_params, xfer_align);
	OFF(snd_pcm_sw_params, start_threshold);
	OFF(snd_pcm_sw_params, stop_threshold);
	OFF(snd_pcm_sw_params, silence_threshold);
	OFF(snd_pcm_sw_params, silence_size);
	OFF(snd_pcm_sw_params, boundary);
	OFF(snd_pcm_sw_params, proto);
	OFF(snd_pcm_sw_params, tstamp_type);
	OFF(snd_pcm_sw_params, reserved);

	SIZE(snd_pcm_channel_info);
	OFF(snd_pcm_channel_info, channel);
	OFF(snd_pcm_channel_info, offset);
	OFF(snd_pcm_channel_info, first);
	OFF(snd_pcm_channel_info, step);

	SIZE(snd_pcm_mmap_status);
	OFF(snd_pcm_mmap_status, state);
	OFF(snd_pcm_mmap_status, hw_ptr);
	OFF(snd_pcm_mmap_status, tstamp);
	OFF(snd_pcm_mmap_status, suspended_state);
	OFF(snd_pcm_mmap_status, audio_tstamp);

	SIZE(snd_pcm_mmap_control);
	OFF(snd_pcm_mmap_control, appl_ptr);
	OFF(snd_pcm_mmap_control, avail_min);

	SIZE(snd_pcm_sync_ptr);
	OFF(snd_pcm_sync_ptr, flags);
	OFF(snd_pcm_sync_ptr, s);
	OFF(snd_pcm_sync_ptr, c);

	SIZE(snd_pcm_info);
	OFF(snd_pcm_info, device);
	OFF(snd_pcm_info, subdevice);
	OFF(snd_pcm_info, stream);
	OFF(snd_pcm_info, card);
	OFF(snd_pcm_info, id);
	OFF(snd_pcm_info, name);
	OFF(snd_pcm_info, subname);
	OFF(snd_pcm_info, dev_class);
	OFF(snd_pcm_info, dev_subclass);
	OFF(snd_pcm_info, subdevices_count);
	OFF(snd_pcm_info, subdevices_avail);
	OFF(snd_pcm_info, sync);
	OFF(snd_pcm_info, reserved);

	SIZE(snd_pcm_status);
	OFF(snd_pcm_status, state);
	OFF(snd_pcm_status, trigger_tstamp);
	OFF(snd_pcm_status, tstamp);
	OFF(snd_pcm_status, appl_ptr);
	OFF(snd_pcm_status, hw_ptr);
	OFF(snd_pcm_status, delay);
	OFF(snd_pcm_status, avail);
	OFF(snd_pcm_status, avail_max);
	OFF(snd_pcm_status, overrange);
	OFF(snd_pcm_status, suspended_state);
	OFF(snd_pcm_status, audio_tstamp_data);
	OFF(snd_pcm_status, audio_tstamp);
	OFF(snd_pcm_status, driver_tstamp);
	OFF(snd_pcm_status, audio_tstamp_accuracy);
	OFF(snd_pcm_status, reserved);

	printf("interval.openmin %u\n", interval_flag_word(0));
	printf("interval.openmax %u\n", interval_flag_word(1));
	printf("interval.integer %u\n", interval_flag_word(2));
	printf("interval.empty %u\n", interval_flag_word(3));

	VAL(SNDRV_PCM_IOCTL_PVERSION);
	VAL(SNDRV_PCM_IOCTL_INFO);
	VAL(SNDRV_PCM_IOCTL_TSTAMP);
	VAL(SNDRV_PCM_IOCTL_TTSTAMP);
	VAL(SNDRV_PCM_IOCTL_USER_PVERSION);
	VAL(SNDRV_PCM_IOCTL_HW_REFINE);
	VAL(SNDRV_PCM_IOCTL_HW_PARAMS);
	VAL(SNDRV_PCM_IOCTL_HW_FREE);
	VAL(SNDRV_PCM_IOCTL_SW_PARAMS);
	VAL(SNDRV_PCM_IOCTL_STATUS);
	VAL(SNDRV_PCM_IOCTL_DELAY);
	VAL(SNDRV_PCM_IOCTL_HWSYNC);
	VAL(SNDRV_PCM_IOCTL_SYNC_PTR);
	VAL(SNDRV_PCM_IOCTL_STATUS_EXT);
	VAL(SNDRV_PCM_IOCTL_CHANNEL_INFO);
	VAL(SNDRV_PCM_IOCTL_PREPARE);
	VAL(SNDRV_PCM_IOCTL_RESET);
	VAL(SNDRV_PCM_IOCTL_START);
	VAL(SNDRV_PCM_IOCTL_DROP);
	VAL(SNDRV_PCM_IOCTL_DRAIN);
	VAL(SNDRV_PCM_IOCTL_PAUSE);
	VAL(SNDRV_PCM_IOCTL_REWIND);
	VAL(SNDRV_PCM_IOCTL_RESUME);
	VAL(SNDRV_PCM_IOCTL_XRUN);
	VAL(SNDRV_PCM_IOCTL_FORWARD);
	VAL(SNDRV_PCM_IOCTL_LINK);
	VAL(SNDRV_PCM_IOCTL_UNLINK);
	VAL(SNDRV_CTL_IOCTL_PCM_PREFER_SUBDEVICE);

	VAL(SNDRV_PCM_VERSION);
	VAL(SNDRV_PCM_MMAP_OFFSET_DATA);
	VAL(SNDRV_PCM_MMAP_OFFSET_STATUS);
	VAL(SNDRV_PCM_MMAP_OFFSET_CONTROL);
	VAL(SNDRV_PCM_MMAP_OFFSET_STATUS_NEW);
	VAL(SNDRV_PCM_MMAP_OFFSET_CONTROL_NEW);
	VAL(SNDRV_PCM_SYNC_PTR_HWSYNC);
	VAL(SNDRV_PCM_SYNC_PTR_APPL);
	VAL(SNDRV_PCM_SYNC_PTR_AVAIL_MIN);
	VAL(SNDRV_PCM_TSTAMP_NONE);
	VAL(SNDRV_PCM_TSTAMP_ENABLE);
	VAL(SNDRV_PCM_TSTAMP_TYPE_GETTIMEOFDAY);
	VAL(SNDRV_PCM_TSTAMP_TYPE_MONOTONIC);
	VAL(SNDRV_PCM_TSTAMP_TYPE_MONOTONIC_RAW);
	VAL(SNDRV_PCM_STREAM_PLAYBACK);
	VAL(SNDRV_PCM_STREAM_CAPTURE);

	VAL(SNDRV_PCM_ACCESS_MMAP_INTERLEAVED);
	VAL(SNDRV_PCM_ACCESS_MMAP_NONINTERLEAVED);
	VAL(SNDRV_PCM_ACCESS_MMAP_COMPLEX);
	VAL(SNDRV_PCM_ACCESS_RW_INTERLEAVED);
	VAL(SNDRV_PCM_ACCESS_RW_NONINTERLEAVED);

	VAL(SNDRV_PCM_HW_PARAM_ACCESS);
	VAL(SNDRV_PCM_HW_PARAM_FORMAT);
	VAL(SNDRV_PCM_HW_PARAM_SUBFORMAT);
	VAL(SNDRV_PCM_HW_PARAM_SAMPLE_BITS);
	VAL(SNDRV_PCM_HW_PARAM_FRAME_BITS);
	VAL(SNDRV_PCM_HW_PARAM_CHANNELS);
	VAL(SNDRV_PCM_HW_PARAM_RATE);
	VAL(SNDRV_PCM_HW_PARAM_PERIOD_TIME);
	VAL(SNDRV_PCM_HW_PARAM_PERIOD_SIZE);
	VAL(SNDRV_PCM_HW_PARAM_PERIOD_BYTES);
	VAL(SNDRV_PCM_HW_PARAM_PERIODS);
	VAL(SNDRV_PCM_HW_PARAM_BUFFER_TIME);
	VAL(SNDRV_PCM_HW_PARAM_BUFFER_SIZE);
	VAL(SNDRV_PCM_HW_PARAM_BUFFER_BYTES);
	VAL(SNDRV_PCM_HW_PARAM_TICK_TIME);

	VAL(SNDRV_PCM_INFO_MMAP);
	VAL(SNDRV_PCM_INFO_MMAP_VALID);
	VAL(SNDRV_PCM_INFO_BATCH);
	VAL(SNDRV_PCM_INFO_SYNC_APPLPTR);
	VAL(SNDRV_PCM_INFO_INTERLEAVED);
	VAL(SNDRV_PCM_INFO_NONINTERLEAVED);
	VAL(SNDRV_PCM_INFO_PAUSE);
	VAL(SNDRV_PCM_INFO_EXPLICIT_SYNC);
	VAL(SNDRV_PCM_INFO_NO_REWINDS);

	VAL(SNDRV_PCM_STATE_OPEN);
	VAL(SNDRV_PCM_STATE_SETUP);
	VAL(SNDRV_PCM_STATE_PREPARED);
	VAL(SNDRV_PCM_STATE_RUNNING);
	VAL(SNDRV_PCM_STATE_XRUN);
	VAL(SNDRV_PCM_STATE_DRAINING);
	VAL(SNDRV_PCM_STATE_PAUSED);
	VAL(SNDRV_PCM_STATE_SUSPENDED);
	VAL(SNDRV_PCM_STATE_DISCONNECTED);

	VAL(SNDRV_PCM_FORMAT_S8);
	VAL(SNDRV_PCM_FORMAT_U8);
	VAL(SNDRV_PCM_FORMAT_S16_LE);
	VAL(SNDRV_PCM_FORMAT_S16_BE);
	VAL(SNDRV_PCM_FORMAT_U16_LE);
	VAL(SNDRV_PCM_FORMAT_U16_BE);
	VAL(SNDRV_PCM_FORMAT_S24_LE);
	VAL(SNDRV_PCM_FORMAT_S24_BE);
	VAL(SNDRV_PCM_FORMAT_U24_LE);
	VAL(SNDRV_PCM_FORMAT_U24_BE);
	VAL(SNDRV_PCM_FORMAT_S32_LE);
	VAL(SNDRV_PCM_FORMAT_S32_BE);
	VAL(SNDRV_PCM_FORMAT_U32_LE);
	VAL(SNDRV_PCM_FORMAT_U32_BE);
	VAL(SNDRV_PCM_FORMAT_FLOAT_LE);
	VAL(SNDRV_PCM_FORMAT_FLOAT_BE);
	VAL(SNDRV_PCM_FORMAT_FLOAT64_LE);
	VAL(SNDRV_PCM_FORMAT_FLOAT64_BE);
	VAL(SNDRV_PCM_FORMAT_IEC958_SUBFRAME_LE);
	VAL(SNDRV_PCM_FORMAT_IEC958_SUBFRAME_BE);
	VAL(SNDRV_PCM_FORMAT_MU_LAW);
	VAL(SNDRV_PCM_FORMAT_A_LAW);
	VAL(SNDRV_PCM_FORMAT_IMA_ADPCM);
	VAL(SNDRV_PCM_FORMAT_MPEG);
	VAL(SNDRV_PCM_FORMAT_GSM);
	VAL(SNDRV_PCM_FORMAT_S20_LE);
	VAL(SNDRV_PCM_FORMAT_S20_BE);
	VAL(SNDRV_PCM_FORMAT_U20_LE);
	VAL(SNDRV_PCM_FORMAT_U20_BE);
	VAL(SNDRV_PCM_FORMAT_SPECIAL);
	VAL(SNDRV_PCM_FORMAT_S24_3LE);
	VAL(SNDRV_PCM_FORMAT_S24_3BE);
	VAL(SNDRV_PCM_FORMAT_U24_3LE);
	VAL(SNDRV_PCM_FORMAT_U24_3BE);
	VAL(SNDRV_PCM_FORMAT_S20_3LE);
	VAL(SNDRV_PCM_FORMAT_S20_3BE);
	VAL(SNDRV_PCM_FORMAT_U20_3LE);
	VAL(SNDRV_PCM_FORMAT_U20_3BE);
	VAL(SNDRV_PCM_FORMAT_S18_3LE);
	VAL(SNDRV_PCM_FORMAT_S18_3BE);
	VAL(SNDRV_PCM_FORMAT_U18_3LE);
	VAL(SNDRV_PCM_FORMAT_U18_3BE);
	VAL(SNDRV_PCM_FORMAT_G723_24);
	VAL(SNDRV_PCM_FORMAT_G723_24_1B);
	VAL(SNDRV_PCM_FORMAT_G723_40);
	VAL(SNDRV_PCM_FORMAT_G723_40_1B);
	VAL(SNDRV_PCM_FORMAT_DSD_U8);
	VAL(SNDRV_PCM_FORMAT_DSD_U16_LE);
	VAL(SNDRV_PCM_FORMAT_DSD_U32_LE);
	VAL(SNDRV_PCM_FORMAT_DSD_U16_BE);
	VAL(SNDRV_PCM_FORMAT_DSD_U32_BE);
	VAL(SNDRV_PCM_FORMAT_LAST);
	VAL(SNDRV_PCM_FORMAT_S16);
	VAL(SNDRV_PCM_FORMAT_U16);
	VAL(SNDRV_PCM_FORMAT_S24);
	VAL(SNDRV_PCM_FORMAT_U24);
	VAL(SNDRV_PCM_FORMAT_S32);
	VAL(SNDRV_PCM_FORMAT_U32);
	VAL(SNDRV_PCM_FORMAT_FLOAT);
	VAL(SNDRV_PCM_FORMAT_FLOAT64);
	return 0;
}
